"""The publisher's Ed25519 signing key: read from the environment, or made new.

`SENTINEL_SIGNING_KEY_FILE` names a PEM PKCS8 private key file; `SENTINEL_SIGNING_KEY` holds
the same PEM text (for secret stores that inject values, not files). Neither set: bundles
are published unsigned, as `make run` does. The signature format and verification are in
serving/signatures.py, shared with the service.
"""

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from serving.signatures import (
    SigningKey,
    SigningKeyError,
    generate_key_pair,
    signing_key_from_pem,
)

SIGNING_KEY_FILE_VAR = "SENTINEL_SIGNING_KEY_FILE"
SIGNING_KEY_VAR = "SENTINEL_SIGNING_KEY"


class _Default(enum.Enum):
    FROM_ENV = "from the environment"


# `publish(signing_key=FROM_ENV)`, its default: the key signing_key_from_env() finds (None
# being "unsigned", a distinct value is needed).
FromEnv = Literal[_Default.FROM_ENV]
FROM_ENV: FromEnv = _Default.FROM_ENV


def signing_key_from_env(environ: Mapping[str, str] | None = None) -> SigningKey | None:
    """The publisher's signing key: the PEM file SENTINEL_SIGNING_KEY_FILE names, or the PEM
    text of SENTINEL_SIGNING_KEY; None when neither is set (bundles go out unsigned). A key
    that cannot be used raises SigningKeyError naming the variable, never echoing the key."""
    environ = os.environ if environ is None else environ
    path, text = environ.get(SIGNING_KEY_FILE_VAR, ""), environ.get(SIGNING_KEY_VAR, "")
    if path.strip() and text.strip():
        raise SigningKeyError(f"set {SIGNING_KEY_FILE_VAR} or {SIGNING_KEY_VAR}, not both")
    if text.strip():
        # Env files and CI secrets often carry the PEM's newlines as a literal "\n".
        pem_text = text.replace("\\n", "\n") if "\n" not in text else text
        return signing_key_from_pem(pem_text.encode(), SIGNING_KEY_VAR)
    if not path.strip():
        return None
    source = f"{SIGNING_KEY_FILE_VAR}: {path}"
    try:
        pem = Path(path).expanduser().read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"{source}: no such file") from None
    except OSError as exc:
        raise SigningKeyError(f"{source}: unreadable ({exc.strerror or exc})") from None
    return signing_key_from_pem(pem, source)


@dataclass(frozen=True)
class KeyPairFiles:
    private: Path
    public: Path
    key_id: str


def write_key_pair(folder: Path, name: str) -> KeyPairFiles:
    """A new key pair as `name.key` (private, mode 0600) and `name.pub` in `folder`. An
    existing file is never overwritten (SigningKeyError): a replaced key cannot be undone."""
    if not name or name.startswith(".") or Path(name).name != name:
        raise SigningKeyError(f"key name {name!r}: a plain file name is needed, without '/'")
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (private, public):
        if path.exists():
            raise SigningKeyError(f"{path} already exists: not overwriting a key")
    private_pem, public_pem, key_id = generate_key_pair()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_new(private, private_pem, 0o600)
        try:
            _write_new(public, public_pem, 0o644)
        except OSError:
            private.unlink()  # half a pair is no use
            raise
    except FileExistsError as exc:  # created meanwhile by someone else
        raise SigningKeyError(f"{exc.filename} already exists: not overwriting a key") from None
    except OSError as exc:
        raise SigningKeyError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    return KeyPairFiles(private, public, key_id)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` (never replacing it) with `mode` from the first byte: a private key
    is never readable by others, even for an instant."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        f.write(data)
        f.flush()
        os.fsync(fd)

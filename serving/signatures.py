"""Signed bundles: a detached Ed25519 signature of `manifest.json`, proving who published it.

The manifest's sha256 checksums prove a bundle is intact; they do not prove where it came
from (anyone who can write the registry can write a consistent manifest). The publisher
signs the exact bytes of `manifest.json` and writes `manifest.sig` beside it:

    {"algorithm": "ed25519", "key_id": "<16 hex digits>", "signature": "<base64>"}

Since the manifest holds the sha256 of every other file, the signature covers the whole
bundle. `key_id` is the first 16 hex digits of the sha256 of the raw 32-byte public key; it
names the key in messages and logs (it is not secret), and it is only a hint: a signature is
accepted if it verifies against any trusted key.

Keys are PEM files: the private key PKCS8 (the publisher's `SENTINEL_SIGNING_KEY_FILE` or
`SENTINEL_SIGNING_KEY`), the public key SubjectPublicKeyInfo (the service's
`SENTINEL_BUNDLE_PUBLIC_KEYS`). Key material is never logged or put in a message.
"""

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_FILE = "manifest.sig"
ALGORITHM = "ed25519"
PUBLIC_KEY_SUFFIXES = (".pub", ".pem")  # what a directory of trusted keys is scanned for


class SigningKeyError(ValueError):
    """A key that cannot be used (missing, not PEM, not Ed25519); the message names where
    it came from, never its content."""


class SignatureError(ValueError):
    """A bundle's signature is malformed or does not verify; the message says which."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    """The publisher's private key and its public key's id."""

    private: Ed25519PrivateKey
    key_id: str

    def __repr__(self) -> str:  # never the key itself, wherever it is printed
        return f"SigningKey(key_id={self.key_id!r})"

    def signature_file(self, manifest: bytes) -> bytes:
        """The content of manifest.sig for these exact manifest bytes."""
        signature = base64.b64encode(self.private.sign(manifest)).decode()
        document = {"algorithm": ALGORITHM, "key_id": self.key_id, "signature": signature}
        return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


def signing_key_from_pem(pem: bytes, source: str) -> SigningKey:
    """The PKCS8 Ed25519 private key in `pem`; `source` names it in the error."""
    if b"PUBLIC KEY" in pem:  # the wrong file of the pair
        raise SigningKeyError(f"{source}: a public key; give the private key (.key) instead")
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # encrypted: the publisher runs unattended, nobody to ask a password
        raise SigningKeyError(f"{source}: the key is encrypted; give it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{source}: not a PEM private key (PKCS8 Ed25519 expected)") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningKeyError(f"{source}: not an Ed25519 key ({type(private).__name__})")
    return SigningKey(private, key_id(private.public_key()))


def public_key_from_pem(pem: bytes, source: str) -> Ed25519PublicKey:
    """The Ed25519 public key in `pem`; `source` names it in the error."""
    if b"PRIVATE KEY" in pem:  # the wrong file of the pair: say so, and do not echo it
        raise SigningKeyError(f"{source}: a private key; give the public key (.pub) instead")
    try:
        public = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{source}: not a PEM public key (Ed25519 expected)") from None
    if not isinstance(public, Ed25519PublicKey):
        raise SigningKeyError(f"{source}: not an Ed25519 key ({type(public).__name__})")
    return public


def generate_key_pair() -> tuple[bytes, bytes, str]:
    """A new (private PEM, public PEM, key id)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem, key_id(private.public_key())


def _read_key_file(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"{variable}: {path}: no such file") from None
    except OSError as exc:
        raise SigningKeyError(f"{variable}: {path}: unreadable ({exc.strerror or exc})") from None


def load_public_keys(spec: str, variable: str) -> dict[str, Ed25519PublicKey]:
    """The trusted keys by id, from `spec`: comma-separated PEM public key files and
    directories (whose `*.pub` and `*.pem` files are read). `variable` names the setting in
    errors. Every entry must hold a key: a typo is refused, not silently trusted less."""
    keys: dict[str, Ed25519PublicKey] = {}
    entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
    if not entries:
        raise SigningKeyError(f"{variable}: no key file or directory given")
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in PUBLIC_KEY_SUFFIXES)
            if not files:
                raise SigningKeyError(f"{variable}: {path}: no *.pub or *.pem file in it")
        else:
            files = [path]
        for file in files:
            public = public_key_from_pem(_read_key_file(file, variable), f"{variable}: {file}")
            keys[key_id(public)] = public
    return keys


def verify_manifest(
    manifest: bytes, signature_file: bytes, trusted: dict[str, Ed25519PublicKey]
) -> str:
    """The id of the trusted key that signed these exact manifest bytes, else SignatureError.

    `signature_file` is the content of manifest.sig."""
    try:
        document = json.loads(signature_file)
        algorithm, claimed = document["algorithm"], str(document["key_id"])
        signature = base64.b64decode(document["signature"], validate=True)
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise SignatureError(
            f"{SIGNATURE_FILE} is not a signature (JSON with algorithm, key_id and a base64 "
            "signature expected)"
        ) from None
    if algorithm != ALGORITHM:
        raise SignatureError(f"{SIGNATURE_FILE}: algorithm {algorithm!r}, not {ALGORITHM!r}")
    # The claimed key first; the id is a hint only, so every other trusted key is tried too.
    order = sorted(trusted, key=lambda kid: kid != claimed)
    for kid in order:
        try:
            trusted[kid].verify(signature, manifest)
        except InvalidSignature:
            continue
        return kid
    if claimed in trusted:
        raise SignatureError(
            f"{SIGNATURE_FILE} does not verify: it claims trusted key {claimed}, but "
            "manifest.json was changed after signing or the signature is corrupt"
        )
    raise SignatureError(
        f"signed by key {claimed}, which is not trusted (trusted: {', '.join(sorted(trusted))})"
    )

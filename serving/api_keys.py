"""API keys: named bearer tokens with scopes, kept only as hashes (SENTINEL_API_KEYS_FILE).

The file is JSON, written by `sentinel api-key create` (which prints the token once):

    {"keys": [{"name": "checkout", "sha256": "<hex of sha256(token)>",
               "scopes": ["score", "feedback"], "created_at": "2026-11-29T10:00:00Z",
               "rate_limits": {"/v1/score": "2000/s"}}]}

Several keys may be active at once, which is how a key is rotated: create the new one, move
the callers, delete the old one. The service re-reads the file when it changes (within a
second), so neither step needs a restart.

Why SHA-256 and not a password hash (bcrypt, argon2): tokens are 256 random bits, so the
hash only has to be one-way, not slow; a slow hash would cost milliseconds on every payment.
The lookup is by hash, so the comparison never touches the token itself.
"""

import datetime as dt
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.rate_limits import LIMITED_ROUTES, Rate, parse_rate

SCOPES = ("score", "feedback", "admin")
HEX = frozenset("0123456789abcdef")
TOKEN_PREFIX = "sst_"  # recognisable in a leaked-secret scan
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class KeyFileError(ValueError):
    """The keys file cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    scopes: frozenset[str]
    rate_limits: Mapping[str, Rate] = field(default_factory=dict)  # this key's, by route
    created_at: str | None = None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= NAME_CHARS:
        raise KeyFileError(f"key name {name!r}: use 1-64 letters, digits, '-', '_' or '.'")
    return name


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    given = frozenset(scopes)
    unknown = sorted(given - set(SCOPES))
    if unknown or not given:
        raise KeyFileError(f"scopes {sorted(given)}: each one of {', '.join(SCOPES)}")
    return given


def _key(entry: Any, where: str) -> ApiKey:
    if not isinstance(entry, dict):
        raise KeyFileError(f"{where}: each key is an object")
    unknown = sorted(set(entry) - {"name", "sha256", "scopes", "rate_limits", "created_at"})
    if unknown:
        raise KeyFileError(f"{where}: unknown field {unknown[0]!r}")
    name = check_name(str(entry.get("name", "")))
    digest = entry.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= HEX:
        raise KeyFileError(f"{where} ({name}): sha256 must be 64 lowercase hex characters")
    limits = entry.get("rate_limits") or {}
    if not isinstance(limits, dict):
        raise KeyFileError(f"{where} ({name}): rate_limits is an object of route: rate")
    rates = {}
    for route, rate in limits.items():
        if route not in LIMITED_ROUTES:
            raise KeyFileError(
                f"{where} ({name}): rate_limits.{route}: not one of {', '.join(LIMITED_ROUTES)}"
            )
        try:
            rates[str(route)] = parse_rate(str(rate))
        except ValueError as exc:
            raise KeyFileError(f"{where} ({name}): rate_limits.{route}: {exc}") from None
    scopes = entry.get("scopes")
    if not isinstance(scopes, list):
        raise KeyFileError(f"{where} ({name}): scopes is a list")
    try:
        checked = check_scopes(scopes)
    except KeyFileError as exc:
        raise KeyFileError(f"{where} ({name}): {exc}") from None
    return ApiKey(name, digest, checked, rates, entry.get("created_at"))


def parse_keys(data: Any, source: str) -> list[ApiKey]:
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeyFileError(f'{source}: expected {{"keys": [...]}}')
    keys = [_key(entry, f"{source}: keys[{i}]") for i, entry in enumerate(data["keys"])]
    names = [k.name for k in keys]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise KeyFileError(f"{source}: two keys are named {duplicate!r}")
    return keys


def read_keys(path: Path) -> list[ApiKey]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such file (SENTINEL_API_KEYS_FILE)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        data = json.loads(text) if text.strip() else {"keys": []}
    except ValueError as exc:
        raise KeyFileError(f"{path}: not JSON ({exc})") from None
    return parse_keys(data, str(path))


def _write(path: Path, keys: list[ApiKey]) -> None:
    """Atomically, readable by the owner only (hashes, but still nobody else's business)."""
    data = {
        "keys": [
            {"name": k.name, "sha256": k.sha256, "scopes": sorted(k.scopes),
             "created_at": k.created_at,
             "rate_limits": {route: str(rate) for route, rate in k.rate_limits.items()}}
            for k in keys
        ]
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    # a new file of our own (mode 0600, never an existing file or a symlink), then renamed
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_key(path: Path, name: str, scopes: Iterable[str]) -> str:
    """Add a key to the file (created if missing); returns the token, which is not kept."""
    keys = read_keys(path) if path.exists() else []
    check_name(name)
    if any(k.name == name for k in keys):
        raise KeyFileError(f"{path}: a key named {name!r} exists (revoke it first)")
    token = new_token()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    keys.append(ApiKey(name, token_hash(token), check_scopes(scopes), {}, now))
    _write(path, keys)
    return token


def revoke_key(path: Path, name: str) -> None:
    keys = read_keys(path)
    kept = [k for k in keys if k.name != name]
    if len(kept) == len(keys):
        raise KeyFileError(f"{path}: no key named {name!r}")
    _write(path, kept)


class KeyRing:
    """The keys in force, by token hash, re-read when the file changes."""

    def __init__(self, path: Path | None, admin_token: str | None = None) -> None:
        self.path = path
        self.admin_token = admin_token
        self._mtime: int | None = None
        self.by_hash: dict[str, ApiKey] = {}
        if path is not None:
            self.reload()  # a bad file at startup stops the service (KeyFileError)
        elif admin_token is not None:
            self._install([])

    @property
    def enabled(self) -> bool:
        """Authentication is on: a keys file is configured (even an empty one)."""
        return self.path is not None

    def _install(self, keys: list[ApiKey]) -> None:
        by_hash = {k.sha256: k for k in keys}
        if self.admin_token is not None:  # SENTINEL_ADMIN_TOKEN: an admin key, as before
            digest = token_hash(self.admin_token)
            by_hash.setdefault(digest, ApiKey("admin-token", digest, frozenset({"admin"})))
        self.by_hash = by_hash

    def reload(self) -> bool:
        """Re-read the file if it changed; True if it did. A broken file raises
        KeyFileError and leaves the keys in force unchanged."""
        if self.path is None:
            return False
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if self._mtime is not None and mtime == self._mtime:
            return False
        keys = read_keys(self.path)
        self._install(keys)
        self._mtime = mtime
        return True

    def find(self, token: str) -> ApiKey | None:
        return self.by_hash.get(token_hash(token))

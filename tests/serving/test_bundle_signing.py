"""Signed bundles: the service loads only bundles signed by a trusted key, when it has keys."""

import datetime as dt
import io
import json
from pathlib import Path

import pytest
import xgboost as xgb
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from serving.bundle import BundleError, load_bundle
from serving.models import ModelManager
from serving.registry import Registry
from serving.settings import ServiceSettings
from serving.signatures import (
    SIGNATURE_FILE,
    SigningKey,
    generate_key_pair,
    public_key_from_pem,
    signing_key_from_pem,
)
from tests.serving.bundles import make_writable, publish_booster, small_booster


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    return small_booster(seed=1, rounds=5)  # trained once: each bundle only compiles it


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def new_key(folder: Path, name: str) -> tuple[SigningKey, Path]:
    """A key pair: the signing key, and its public key written to `folder/name.pub`."""
    private_pem, public_pem, _ = generate_key_pair()
    folder.mkdir(parents=True, exist_ok=True)
    public = folder / f"{name}.pub"
    public.write_bytes(public_pem)
    return signing_key_from_pem(private_pem, name), public


def trusted(*public_files: Path) -> dict[str, Ed25519PublicKey]:
    """What the service trusts for SENTINEL_BUNDLE_PUBLIC_KEYS=<these files>."""
    keys = ServiceSettings(bundle_public_keys=",".join(map(str, public_files)))
    found = keys.trusted_bundle_keys()
    assert found is not None
    return found


def publish(
    registry: Registry, booster: xgb.Booster, key: SigningKey | None, minute: int = 0
) -> Path:
    """A bundle published by the real publisher, signed with `key` (None: unsigned)."""
    when = dt.datetime(2026, 1, 1, 12, minute, tzinfo=dt.UTC)
    run_id = f"run{minute:04d}signed"
    version, _ = publish_booster(registry, booster, 0.5, run_id, when, signing_key=key)
    return registry.bundle_dir(version)


def rejection(bundle: Path, keys: dict[str, Ed25519PublicKey]) -> str:
    with pytest.raises(BundleError) as caught:
        load_bundle(bundle, trusted_keys=keys)
    return str(caught.value)


def test_a_signed_bundle_loads_and_says_which_key_signed_it(
    tmp_path: Path, registry: Registry, booster: xgb.Booster
) -> None:
    key, public = new_key(tmp_path / "keys", "a")
    bundle = publish(registry, booster, key)
    loaded = load_bundle(bundle, trusted_keys=trusted(public))
    assert loaded.signed_by == key.key_id
    assert load_bundle(bundle).signed_by is None  # no trusted keys: not checked


def test_without_trusted_keys_an_unsigned_bundle_loads_as_before(
    tmp_path: Path, registry: Registry, booster: xgb.Booster
) -> None:
    bundle = publish(registry, booster, None)
    assert not (bundle / SIGNATURE_FILE).exists()
    assert ServiceSettings(home=tmp_path).trusted_bundle_keys() is None
    manager = ModelManager(ServiceSettings(home=tmp_path))
    assert manager.reload() is True
    assert manager.current.champion is not None and manager.current.champion.path == bundle


def test_an_unsigned_bundle_is_rejected_before_anything_else_is_read(
    tmp_path: Path, registry: Registry, booster: xgb.Booster
) -> None:
    _, public = new_key(tmp_path / "keys", "a")
    bundle = publish(registry, booster, None)
    make_writable(bundle)
    (bundle / "model.onnx").write_bytes(b"corrupt")  # a checksum failure, were it checked
    reason = rejection(bundle, trusted(public))
    assert "unsigned" in reason and "SENTINEL_BUNDLE_PUBLIC_KEYS is set" in reason
    assert "sha256" not in reason


def test_a_bundle_signed_by_an_untrusted_key_is_rejected_naming_it(
    tmp_path: Path, registry: Registry, booster: xgb.Booster
) -> None:
    ours, public = new_key(tmp_path / "keys", "ours")
    theirs, _ = new_key(tmp_path / "elsewhere", "theirs")
    reason = rejection(publish(registry, booster, theirs), trusted(public))
    assert f"signed by key {theirs.key_id}, which is not trusted" in reason
    assert ours.key_id in reason  # what is trusted, to compare with


def test_a_manifest_changed_after_signing_is_rejected(
    tmp_path: Path, registry: Registry, booster: xgb.Booster
) -> None:
    key, public = new_key(tmp_path / "keys", "a")
    bundle = publish(registry, booster, key)
    make_writable(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["threshold"] = 0.99  # a consistent bundle still: only the signature can tell
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    assert load_bundle(bundle).threshold == 0.99  # unchecked, the change would serve
    reason = rejection(bundle, trusted(public))
    assert f"claims trusted key {key.key_id}" in reason
    assert "manifest.json was changed after signing" in reason


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x00\xffnot json", "manifest.sig is not a signature"),
        (b'{"algorithm": "ed25519", "key_id": "abc"}', "manifest.sig is not a signature"),
        (b'{"algorithm": "ed25519", "key_id": "a", "signature": "***"}', "is not a signature"),
        (b'["ed25519"]', "manifest.sig is not a signature"),
        (b'{"algorithm": "rsa", "key_id": "a", "signature": "AAAA"}', "algorithm 'rsa'"),
        (b'{"algorithm": "ed25519", "key_id": "a", "signature": "AAAA"}', "key a, which is not"),
    ],
)
def test_a_garbage_signature_file_is_rejected_with_a_clear_reason(
    tmp_path: Path, registry: Registry, booster: xgb.Booster, content: bytes, expected: str
) -> None:
    key, public = new_key(tmp_path / "keys", "a")
    bundle = publish(registry, booster, key)
    make_writable(bundle)
    (bundle / SIGNATURE_FILE).write_bytes(content)
    reason = rejection(bundle, trusted(public))
    assert expected in reason
    assert reason.startswith(str(bundle))


def test_rotation_two_trusted_keys_then_the_old_one_retired(
    tmp_path: Path, registry: Registry, booster: xgb.Booster
) -> None:
    old, old_public = new_key(tmp_path / "keys", "old")
    new, new_public = new_key(tmp_path / "keys", "new")
    by_old = publish(registry, booster, old, minute=1)
    by_new = publish(registry, booster, new, minute=2)
    # Both trusted, given as a directory of *.pub files (or as a list of files).
    for both in (trusted(tmp_path / "keys"), trusted(old_public, new_public)):
        assert set(both) == {old.key_id, new.key_id}
        assert load_bundle(by_old, trusted_keys=both).signed_by == old.key_id
        assert load_bundle(by_new, trusted_keys=both).signed_by == new.key_id
    retired = trusted(new_public)
    assert load_bundle(by_new, trusted_keys=retired).signed_by == new.key_id
    assert f"signed by key {old.key_id}, which is not trusted" in rejection(by_old, retired)


def test_the_manager_keeps_its_signed_champion_and_reports_what_it_rejects(
    tmp_path: Path, registry: Registry, booster: xgb.Booster, sentinel_logs: io.StringIO
) -> None:
    key, public = new_key(tmp_path / "keys", "a")
    stranger, _ = new_key(tmp_path / "elsewhere", "b")
    champion = publish(registry, booster, key, minute=1)
    manager = ModelManager(ServiceSettings(home=tmp_path, bundle_public_keys=str(public)))
    assert manager.reload() is True
    assert manager.current.champion is not None
    assert manager.current.champion.signed_by == key.key_id

    unsigned = publish(registry, booster, None, minute=2)  # published as challenger
    assert registry.pointer("challenger") == unsigned.name
    assert manager.reload() is False
    assert manager.current.challenger is None
    assert manager.last_rejected is not None and manager.last_rejected.path == str(unsigned)
    assert "unsigned" in manager.last_rejected.reason

    forged = publish(registry, booster, stranger, minute=3)
    registry.set_pointer("champion", forged.name)  # someone moved the pointer by hand
    assert manager.reload() is False
    assert manager.current.champion.path == champion  # still serving
    assert manager.last_rejected.path == str(forged)
    assert f"{stranger.key_id}, which is not trusted" in manager.last_rejected.reason
    assert manager.counters.rejected == 2 and manager.counters.loaded == 1

    events = [json.loads(line) for line in sentinel_logs.getvalue().splitlines()]
    (signatures,) = [e for e in events if e["event"] == "bundle_signatures"]
    assert signatures["checked"] is True and signatures["trusted_keys"] == [key.key_id]
    rejected = [e for e in events if e["event"] == "bundle_rejected"]
    assert [e["path"] for e in rejected] == [str(unsigned), str(forged)]
    assert "PUBLIC KEY" not in sentinel_logs.getvalue()  # ids only, never key material


def test_the_manager_logs_that_signatures_are_unchecked_without_keys(
    tmp_path: Path, sentinel_logs: io.StringIO
) -> None:
    ModelManager(ServiceSettings(home=tmp_path))
    events = [json.loads(line) for line in sentinel_logs.getvalue().splitlines()]
    (unchecked,) = [e for e in events if e["event"] == "bundle_signatures"]
    assert unchecked["checked"] is False


def _ec_public_pem() -> bytes:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda d: d / "missing.pub", "missing.pub: no such file"),
        (lambda d: _file(d / "x.pub", b"hello"), "not a PEM public key"),
        (lambda d: _file(d / "x.pub", generate_key_pair()[0]), "a private key; give the public"),
        (lambda d: _file(d / "x.pub", _ec_public_pem()), "not an Ed25519 key"),
        (lambda d: _file(d / "empty" / "notes.txt", b"").parent, "no *.pub or *.pem file"),
    ],
)
def test_a_bad_public_key_setting_is_refused_at_startup_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup, expected: str
) -> None:
    _, good = new_key(tmp_path / "keys", "good")
    bad = setup(tmp_path)
    monkeypatch.setenv("SENTINEL_BUNDLE_PUBLIC_KEYS", f"{good},{bad}")  # one bad entry is enough
    with pytest.raises(ValidationError) as caught:
        ServiceSettings()
    (error,) = caught.value.errors()
    assert error["msg"].startswith("Value error, SENTINEL_BUNDLE_PUBLIC_KEYS: ")
    assert expected in error["msg"]
    assert "BEGIN" not in error["msg"]  # never the key file's content


def _file(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_a_public_key_file_round_trips_to_the_same_key_id(tmp_path: Path) -> None:
    key, public = new_key(tmp_path, "a")
    assert set(trusted(public)) == {key.key_id}
    assert len(key.key_id) == 16 and int(key.key_id, 16) >= 0
    assert public_key_from_pem(public.read_bytes(), "a") is not None
    assert "PRIVATE" not in repr(key) and key.key_id in repr(key)


def test_a_model_swapped_after_its_checksum_is_checked_is_never_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever can write the registry must not slip another model.onnx in between the
    checksum and the load: the bytes checked are the bytes loaded."""
    from serving import bundle as bundle_module

    registry = Registry(tmp_path / "registry")
    when = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    checked, _ = publish_booster(registry, small_booster(1), 0.5, "run0001swap", when)
    other, _ = publish_booster(
        registry, small_booster(3), 0.5, "run0003swap", when + dt.timedelta(minutes=1)
    )
    path = registry.bundle_dir(checked)
    make_writable(path)
    verify = bundle_module.verify_checksums

    def then_swap(where: Path, manifest: dict) -> dict[str, bytes]:
        contents = verify(where, manifest)
        (where / "model.onnx").write_bytes((registry.bundle_dir(other) / "model.onnx").read_bytes())
        return contents

    monkeypatch.setattr(bundle_module, "verify_checksums", then_swap)
    loaded = load_bundle(path)  # the other model would fail this bundle's proof rows
    assert loaded.version == checked

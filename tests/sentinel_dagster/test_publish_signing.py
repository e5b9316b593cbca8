"""The publisher signs bundles with the configured key; `sentinel signing-key generate`."""

import json
import stat
from pathlib import Path

import dagster as dg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app
from sentinel_dagster.defs.resources import GovernancePolicy, SentinelHome
from sentinel_dagster.defs.training import model_bundle
from sentinel_dagster.governance.publishing import BundleContent, publish
from sentinel_dagster.governance.signing_keys import signing_key_from_env, write_key_pair
from serving.registry import Registry
from serving.settings import ServiceSettings
from serving.signatures import SIGNATURE_FILE, SigningKeyError, verify_manifest

FILE_VAR, TEXT_VAR = "SENTINEL_SIGNING_KEY_FILE", "SENTINEL_SIGNING_KEY"


@pytest.fixture(autouse=True)
def no_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the developer's shell exports, each test starts with no key."""
    monkeypatch.delenv(FILE_VAR, raising=False)
    monkeypatch.delenv(TEXT_VAR, raising=False)


def content(run_id: str = "run0001abcdef") -> BundleContent:
    """A bundle's content; the publisher does not look inside the models."""
    return BundleContent(
        model_json=b"{}",
        model_onnx=b"not-really-onnx",
        threshold=0.5,
        metrics={"pr_auc": 0.8},
        data_fingerprint="test",
        code_version="test",
        mlflow_run_id=run_id,
        mlflow_model_version=None,
        lineage={"test": True},
        card_fields={},
    )


def run_cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def signer_of(bundle: Path, public: Path) -> str:
    """The key id manifest.sig verifies with, against the public key file."""
    trusted = ServiceSettings(bundle_public_keys=str(public)).trusted_bundle_keys()
    assert trusted is not None
    manifest = (bundle / "manifest.json").read_bytes()
    return verify_manifest(manifest, (bundle / SIGNATURE_FILE).read_bytes(), trusted)


def test_the_publisher_signs_with_the_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = write_key_pair(tmp_path / "keys", "publisher")
    monkeypatch.setenv(FILE_VAR, str(pair.private))
    registry = Registry(tmp_path / "registry")
    version, role = publish(registry, content())
    bundle = registry.bundle_dir(version)
    signature = json.loads((bundle / SIGNATURE_FILE).read_text())
    assert signature["algorithm"] == "ed25519" and signature["key_id"] == pair.key_id
    assert signer_of(bundle, pair.public) == pair.key_id
    assert stat.S_IMODE((bundle / SIGNATURE_FILE).stat().st_mode) == 0o444  # like every file
    assert role == "champion" and registry.versions() == [version]  # renamed in, no .tmp left


@pytest.mark.parametrize("newline", ["\n", "\\n"])  # "\\n": as env files often carry it
def test_the_publisher_signs_with_the_key_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, newline: str
) -> None:
    pair = write_key_pair(tmp_path / "keys", "publisher")
    monkeypatch.setenv(TEXT_VAR, pair.private.read_text().replace("\n", newline))
    registry = Registry(tmp_path / "registry")
    version, _ = publish(registry, content())
    assert signer_of(registry.bundle_dir(version), pair.public) == pair.key_id


def test_without_a_key_bundles_are_published_unsigned(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    version, _ = publish(registry, content())
    assert not (registry.bundle_dir(version) / SIGNATURE_FILE).exists()
    assert signing_key_from_env() is None


def _ec_private_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _misconfigure(folder: Path, case: str) -> dict[str, str]:
    pair = write_key_pair(folder, "k")
    other = folder / "other.pem"
    if case == "missing file":
        return {FILE_VAR: str(folder / "missing.key")}
    if case == "not PEM":
        other.write_text("secret-looking text")
        return {FILE_VAR: str(other)}
    if case == "public key":
        return {FILE_VAR: str(pair.public)}
    if case == "not Ed25519":
        other.write_bytes(_ec_private_pem())
        return {FILE_VAR: str(other)}
    if case == "text not PEM":
        return {TEXT_VAR: "secret-looking text"}
    assert case == "both set"
    return {FILE_VAR: str(pair.private), TEXT_VAR: pair.private.read_text()}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing file", "missing.key: no such file"),
        ("not PEM", "other.pem: not a PEM private key"),
        ("public key", "k.pub: a public key; give the private key"),
        ("not Ed25519", "not an Ed25519 key"),
        ("text not PEM", f"{TEXT_VAR}: not a PEM private key"),
        ("both set", f"set {FILE_VAR} or {TEXT_VAR}, not both"),
    ],
)
def test_a_misconfigured_key_fails_the_publish_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, expected: str
) -> None:
    registry = Registry(tmp_path / "registry")
    champion, _ = publish(registry, content("run0001champion"))  # unsigned, before the change
    for name, value in _misconfigure(tmp_path / "keys", case).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SigningKeyError) as caught:
        publish(registry, content("run0002challenger"))
    message = str(caught.value)
    assert message.startswith((FILE_VAR, TEXT_VAR, "set ")) and expected in message
    assert "\n" not in message and "secret-looking" not in message and "BEGIN" not in message
    assert registry.versions() == [champion]
    assert not list(registry.bundles.glob(".tmp-*"))
    assert registry.pointers() == {"champion": champion, "challenger": None,
                                   "previous_champion": None}  # fmt: skip


def test_the_bundle_asset_fails_in_one_line_on_a_misconfigured_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FILE_VAR, str(tmp_path / "missing.key"))
    home = tmp_path / "home"
    with pytest.raises(dg.Failure) as caught:
        model_bundle(
            dg.build_asset_context(),
            promotion_decision={"passed": True},
            candidate_model={"run_id": "run0001abcdef"},
            candidate_evaluation={},
            sentinel_home=SentinelHome(path=str(home)),
            policy=GovernancePolicy(),
        )
    assert caught.value.description == (
        f"nothing published, champion unchanged: {FILE_VAR}: {tmp_path / 'missing.key'}: "
        "no such file"
    )
    assert Registry(home / "registry").versions() == []


def test_generate_writes_a_usable_pair_with_a_private_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "keys"
    result = run_cli("signing-key", "generate", "--out", str(out), "--name", "prod-2026")
    assert result.exit_code == 0, result.output
    private, public = out / "prod-2026.key", out / "prod-2026.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert f"export {FILE_VAR}={private.resolve()}" in result.output
    assert f"export SENTINEL_BUNDLE_PUBLIC_KEYS={public.resolve()}" in result.output
    assert "PRIVATE KEY" not in result.output  # the key itself is never printed
    monkeypatch.setenv(FILE_VAR, str(private))
    key = signing_key_from_env()
    assert key is not None and f"key id {key.key_id}" in result.output
    trusted = ServiceSettings(bundle_public_keys=str(public)).trusted_bundle_keys()
    assert trusted is not None and set(trusted) == {key.key_id}


def test_generate_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    assert run_cli("signing-key", "generate", "--out", str(out)).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = run_cli("signing-key", "generate", "--out", str(out))
    assert again.exit_code == 2
    assert again.output.strip() == (
        f"error: {out / 'bundle-signing.key'} already exists: not overwriting a key"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (out / "bundle-signing.key").unlink()  # half a pair left: still refused, still untouched
    assert run_cli("signing-key", "generate", "--out", str(out)).exit_code == 2
    assert [p.name for p in out.iterdir()] == ["bundle-signing.pub"]


@pytest.mark.parametrize("name", ["../escape", "", ".hidden"])
def test_generate_refuses_a_name_that_is_not_a_file_name(tmp_path: Path, name: str) -> None:
    result = run_cli("signing-key", "generate", "--out", str(tmp_path), "--name", name)
    assert result.exit_code == 2 and result.output.startswith("error: key name")
    assert list(tmp_path.iterdir()) == []


def test_train_says_a_misconfigured_key_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "events.parquet"
    data.write_bytes(b"unread")  # the key is checked before the data is read
    monkeypatch.setenv(TEXT_VAR, "not a key")
    result = run_cli("train", "--data", str(data))
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"error: {TEXT_VAR}: not a PEM private key (PKCS8 Ed25519 expected)"
    )


def test_serve_refuses_a_bad_trusted_key_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTINEL_BUNDLE_PUBLIC_KEYS", str(tmp_path / "nope.pub"))
    result = run_cli("serve")
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: invalid SENTINEL_* settings: SENTINEL_BUNDLE_PUBLIC_KEYS: "
        f"{tmp_path / 'nope.pub'}: no such file"
    )

"""Model loading and hot reload: follow the registry, reject bad bundles, keep serving."""

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from serving.bundle import BundleError, load_bundle
from serving.features import DEFAULT_FEATURE_SET, FeatureSet, feature_set_from_declaration
from serving.models import ModelManager
from serving.registry import Registry
from serving.settings import ServiceSettings
from tests.serving.bundles import make_writable, publish_booster, publish_small, small_booster


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def manager_for(tmp_path: Path, **overrides) -> ModelManager:
    return ModelManager(ServiceSettings(home=tmp_path, **overrides))


def test_no_registry_means_no_model(tmp_path: Path) -> None:
    manager = manager_for(tmp_path)
    assert manager.reload() is False
    assert manager.current.champion is None


def test_follows_champion_and_challenger_pointers(tmp_path: Path, registry: Registry) -> None:
    manager = manager_for(tmp_path)
    first, role = publish_small(registry, seed=1)
    assert role == "champion"
    assert manager.reload() is True
    assert manager.current.champion is not None
    assert manager.current.champion.version == first
    assert manager.current.challenger is None
    second, role = publish_small(registry, seed=2, minute=1)
    assert role == "challenger"
    assert manager.reload() is True
    assert manager.current.challenger is not None
    assert manager.current.challenger.version == second
    assert manager.reload() is False  # nothing changed: nothing reloaded
    assert manager.counters.loaded == 2


def _tamper_model(bundle: Path) -> None:
    make_writable(bundle)
    (bundle / "model.onnx").write_bytes(b"truncated")


def _drop_manifest(bundle: Path) -> None:
    make_writable(bundle)
    (bundle / "manifest.json").unlink()


def _rename_a_feature(bundle: Path) -> None:
    make_writable(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["features"][0] = "amount_in_cents"
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _wrong_checksum(bundle: Path) -> None:
    make_writable(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["model_card.md"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _drop_threshold(bundle: Path) -> None:
    make_writable(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["threshold"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _threshold_above_one(bundle: Path) -> None:
    make_writable(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["threshold"] = 7.5
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_drop_threshold, "needs a numeric threshold"),
        (_threshold_above_one, "threshold 7.5 is not in [0, 1]"),
        (_tamper_model, "model.onnx does not match its sha256"),
        (_drop_manifest, "no manifest.json"),
        (_rename_a_feature, "feature list differs from its feature_set declaration"),
        (_wrong_checksum, "model_card.md does not match its sha256"),
    ],
)
def test_an_invalid_new_champion_is_rejected_and_the_old_keeps_serving(
    tmp_path: Path, registry: Registry, damage, reason: str
) -> None:
    manager = manager_for(tmp_path)
    good, _ = publish_small(registry, seed=1)
    manager.reload()
    bad, _ = publish_small(registry, seed=2, minute=1)
    damage(registry.bundle_dir(bad))
    registry.set_pointer("champion", bad)
    assert manager.reload() is False
    assert manager.current.champion is not None
    assert manager.current.champion.version == good
    assert manager.last_rejected is not None
    assert reason in manager.last_rejected.reason
    assert manager.counters.rejected == 1
    manager.reload()
    assert manager.counters.rejected == 1  # an immutable bad bundle is not retried each poll


def test_seed_variables_pin_the_bundles(tmp_path: Path, registry: Registry, monkeypatch) -> None:
    first, _ = publish_small(registry, seed=1)
    second, _ = publish_small(registry, seed=2, minute=1)
    pinned = tmp_path / "pinned"
    shutil.copytree(registry.bundle_dir(second), pinned)
    monkeypatch.setenv("FRAUD_ARTIFACTS_DIR", str(pinned))  # the seed's older name
    monkeypatch.setenv("SENTINEL_SHADOW_ARTIFACTS_DIR", str(registry.bundle_dir(first)))
    manager = ModelManager(ServiceSettings(home=tmp_path))
    manager.reload()
    assert manager.current.champion is not None and manager.current.challenger is not None
    assert manager.current.champion.path == pinned
    assert manager.current.challenger.version == first


def test_settings_keep_the_seed_defaults(monkeypatch) -> None:
    for name in ("SENTINEL_CIRCUIT_THRESHOLD_MS", "SENTINEL_FORCE_CIRCUIT_OPEN"):
        monkeypatch.delenv(name, raising=False)
    settings = ServiceSettings()
    assert settings.circuit_threshold_ms == 60.0
    assert settings.force_circuit_open is False
    monkeypatch.setenv("SENTINEL_FORCE_CIRCUIT_OPEN", "1")
    monkeypatch.setenv("SENTINEL_ARTIFACTS_DIR", "/models/champion")
    settings = ServiceSettings()
    assert settings.force_circuit_open is True
    assert settings.artifacts_dir == Path("/models/champion")


def _publish_with_maturity(registry: Registry, days: float) -> Path:
    when = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    booster = small_booster(seed=3)
    features = FeatureSet(label_maturity_days=days)
    version, _ = publish_booster(registry, booster, 0.5, "runmaturity", when, features)
    return registry.bundle_dir(version)


def test_the_manifest_carries_the_feature_set_declaration(registry: Registry) -> None:
    bundle_dir = _publish_with_maturity(registry, 7.0)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert feature_set_from_declaration(manifest["feature_set"]) == DEFAULT_FEATURE_SET
    assert manifest["feature_set_fingerprint"] == DEFAULT_FEATURE_SET.fingerprint()


def test_a_bundle_trained_with_another_label_maturity_is_refused(
    tmp_path: Path, registry: Registry
) -> None:
    _publish_with_maturity(registry, 14.0)
    manager = manager_for(tmp_path)  # SENTINEL_LABEL_MATURITY_DAYS defaults to 7
    manager.reload()
    assert manager.current.champion is None
    assert manager.last_rejected is not None
    assert "label maturity of 14 days; this service computes 7" in manager.last_rejected.reason
    matching = manager_for(tmp_path, label_maturity_days=14.0)
    matching.reload()
    assert matching.current.champion is not None


def test_a_bundle_without_a_feature_set_declaration_is_refused(
    tmp_path: Path, registry: Registry
) -> None:
    bundle_dir = _publish_with_maturity(registry, 7.0)
    make_writable(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    del manifest["feature_set"]
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"no feature_set declaration .* retrain it"):
        load_bundle(bundle_dir)
    manifest["feature_set"] = {"name": "sentinel", "version": "x"}
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="malformed feature set declaration"):
        load_bundle(bundle_dir)

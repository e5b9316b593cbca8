"""Bundles prove themselves before serving, and a champion that answers NaN is ejected."""

import json
import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.bundle import BundleError, load_bundle, sha256_file
from serving.registry import Registry
from serving.settings import ServiceSettings
from tests.serving.bundles import (
    SEED_REQUEST,
    make_writable,
    publish_nan_model,
    publish_small,
)

ADMIN = "proof-admin-token-0123456"


def _champion_becomes(client: TestClient, version: str) -> dict:
    """/v1/models once the champion is `version` (the ejection runs in a worker thread)."""
    for _ in range(400):
        models = client.get("/v1/models").json()
        if models["champion"] == version:
            return models
        time.sleep(0.025)
    raise AssertionError(f"the champion never became {version}: {models}")


def _client(home: Path) -> TestClient:
    return TestClient(create_app(ServiceSettings(home=home, admin_token=ADMIN)))


def _rewrite(bundle: Path, name: str, content: str) -> None:
    """Replace a bundle file and its checksum: sound on disk, wrong inside."""
    make_writable(bundle)
    (bundle / name).write_text(content)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = sha256_file(bundle / name)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_a_model_answering_nan_on_real_rows_is_rejected_at_load(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    good, _ = publish_small(registry, seed=1)
    broken, role = publish_nan_model(registry, minute=5)  # passes an all-zeros smoke row
    assert role == "challenger"
    with pytest.raises(BundleError, match=r"model\.onnx's score of proof row 0 nan"):
        load_bundle(registry.bundle_dir(broken))
    with _client(tmp_path) as client:
        models = client.get("/v1/models").json()
        assert (models["champion"], models["challenger"]) == (good, None)
        assert "score of proof row 0 nan is not a probability" in models["last_rejected"]["reason"]


def test_a_compiled_model_that_disagrees_with_its_trainer_is_rejected(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    version, _ = publish_small(registry, seed=1)
    bundle = registry.bundle_dir(version)
    proof = json.loads((bundle / "proof.json").read_text())
    proof["full"]["scores"][3] += 1e-4
    _rewrite(bundle, "proof.json", json.dumps(proof))
    with pytest.raises(BundleError, match=r"scores proof row 3 .* more than 1e-05 apart"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("full"), "has no rows for the full model"),
        (lambda p: p["full"]["rows"][0].pop(), "proof rows of model.onnx are malformed"),
        (lambda p: p["full"]["scores"].pop(), "needs as many scores as rows"),
        (lambda p: p["full"].update(rows="x"), "proof rows of model.onnx are malformed"),
    ],
)
def test_a_malformed_proof_is_rejected_naming_it(tmp_path: Path, change, message: str) -> None:
    registry = Registry(tmp_path / "registry")
    version, _ = publish_small(registry, seed=1)
    bundle = registry.bundle_dir(version)
    proof = json.loads((bundle / "proof.json").read_text())
    change(proof)
    _rewrite(bundle, "proof.json", json.dumps(proof))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_a_champion_that_starts_answering_nan_is_ejected_for_the_one_before(
    tmp_path: Path,
) -> None:
    """A bundle without proof rows (published before they existed) passes its smoke test;
    its first NaN answer takes it out of service and the previous champion serves again."""
    registry = Registry(tmp_path / "registry")
    good, _ = publish_small(registry, seed=1)
    with _client(tmp_path) as client:
        broken, _ = publish_nan_model(registry, minute=5, with_proof=False)
        registry.set_pointer("previous_champion", good)
        registry.set_pointer("champion", broken)
        registry.set_pointer("challenger", None)
        reload = client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
        assert reload.json()["champion"] == broken
        first = client.post("/v1/score", json=SEED_REQUEST).json()
        assert first["scored_by"] == "heuristic"  # the NaN never reaches a caller
        assert first["model_version"] == broken
        models = _champion_becomes(client, good)
        second = client.post("/v1/score", json=SEED_REQUEST).json()
        assert (second["model_version"], second["scored_by"]) == (good, "model")
        assert models["reloads"]["ejected"] == 1
        assert models["last_rejected"]["reason"].startswith(
            "ejected while serving: its full model answered nan"
        )
        assert "sentinel_model_ejections_total 1.0" in client.get("/metrics").text
        client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
        assert client.get("/v1/models").json()["champion"] == good  # never loaded again


def test_at_start_an_ejected_champion_falls_back_to_the_registrys_previous(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path / "registry")
    good, _ = publish_small(registry, seed=1)
    broken, _ = publish_nan_model(registry, minute=5, with_proof=False)
    registry.set_pointer("previous_champion", good)
    registry.set_pointer("champion", broken)
    registry.set_pointer("challenger", None)
    with _client(tmp_path) as client:
        assert client.post("/v1/score", json=SEED_REQUEST).json()["scored_by"] == "heuristic"
        _champion_becomes(client, good)


def test_without_an_earlier_champion_the_heuristic_answers_for_the_broken_one(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path / "registry")
    broken, _ = publish_nan_model(registry, minute=5, with_proof=False)
    with _client(tmp_path) as client:
        for _ in range(3):
            answer = client.post("/v1/score", json=SEED_REQUEST).json()
            assert (answer["model_version"], answer["scored_by"]) == (broken, "heuristic")
        for _ in range(400):  # the ejection runs in a worker thread
            if client.get("/v1/models").json()["reloads"]["ejected"] == 1:
                break
            time.sleep(0.025)
        assert client.get("/v1/models").json()["reloads"]["ejected"] == 1


def test_publishing_cleans_folders_that_killed_publishes_left(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    registry.bundles.mkdir(parents=True)
    stale, fresh = registry.bundles / ".tmp-stale", registry.bundles / ".tmp-fresh"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"half written")
        (folder / "model.onnx").chmod(0o444)
    hour_ago = stale.stat().st_mtime - 3_600
    os.utime(stale, (hour_ago, hour_ago))
    publish_small(registry, seed=1)
    assert not stale.exists()
    assert fresh.exists()  # perhaps a publish in progress right now
    assert len(registry.versions()) == 1

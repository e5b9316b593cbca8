"""The bundle format (DESIGN.md §3): reading and verifying a published model directory.

A bundle holds `manifest.json` (version, features, threshold, metrics, lineage ids and the
sha256 of every other file), `model.json` (XGBoost), `model.onnx` (the compiled serving
model), `model_card.md` and `lineage.json`. Nothing is trusted before its checksum matches.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from serving.features import (
    DEFAULT_FEATURE_SET,
    FeatureSet,
    feature_set_from_declaration,
)
from serving.predictor import CompiledPredictor

MANIFEST = "manifest.json"
REQUIRED_FILES = ("model.json", "model.onnx", "model_card.md", "lineage.json")


class BundleError(ValueError):
    """The bundle is missing, corrupt or incompatible; the message says which."""


class FeatureSetMismatch(BundleError):
    """A sound bundle that declares another feature set (or none: published before v2)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    predictor: CompiledPredictor

    # Cached: read for every scored event.
    @cached_property
    def version(self) -> str:
        return str(self.manifest["version"])

    @cached_property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable {MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: {MANIFEST} is not an object")
    return manifest


def verify_checksums(path: Path, manifest: dict[str, Any]) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict) or set(REQUIRED_FILES) - set(files):
        raise BundleError(f"{path}: manifest must list the sha256 of {', '.join(REQUIRED_FILES)}")
    for name, expected in files.items():
        target = Path(path) / name
        if not target.is_file():
            raise BundleError(f"{path}: {name} is missing")
        if sha256_file(target) != expected:
            raise BundleError(f"{path}: {name} does not match its sha256 in the manifest")


def check_feature_set(path: Path, manifest: dict[str, Any], engine: FeatureSet) -> None:
    """The bundle's declared feature set must be exactly the one the engine computes."""
    declared = manifest.get("feature_set")
    if declared is None:
        raise FeatureSetMismatch(
            f"{path}: no feature_set declaration (published before feature set "
            f"{engine.name} v{engine.version}): retrain it"
        )
    try:
        bundle = feature_set_from_declaration(declared)
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}") from None
    if bundle == engine:
        return
    if (bundle.name, bundle.version) != (engine.name, engine.version):
        raise FeatureSetMismatch(
            f"{path}: feature set {bundle.name} v{bundle.version}; this service computes "
            f"{engine.name} v{engine.version}"
        )
    if bundle.label_maturity_days != engine.label_maturity_days:
        raise FeatureSetMismatch(
            f"{path}: trained with a label maturity of {bundle.label_maturity_days:g} days; "
            f"this service computes {engine.label_maturity_days:g} "
            "(SENTINEL_LABEL_MATURITY_DAYS)"
        )
    raise FeatureSetMismatch(f"{path}: its feature declarations differ from this service's")


def serves_feature_set(path: Path, features: FeatureSet) -> str | None:
    """None if the bundle at `path` declares exactly `features`, else why it does not.

    Only a readable manifest with another (or no) feature set is an answer; an unreadable
    manifest or a malformed declaration raises BundleError: a corrupt bundle is not "another
    feature set".
    """
    try:
        check_feature_set(path, read_manifest(path), features)
    except FeatureSetMismatch as exc:
        return str(exc)
    return None


def load_bundle(path: Path, features: FeatureSet = DEFAULT_FEATURE_SET) -> Bundle:
    """Verify and load a bundle whose feature set is `features`; BundleError says why not."""
    path = Path(path)
    manifest = read_manifest(path)
    verify_checksums(path, manifest)
    check_feature_set(path, manifest, features)
    if manifest.get("features") != list(features.names):
        raise BundleError(f"{path}: its feature list differs from its feature_set declaration")
    try:
        threshold = float(manifest["threshold"])
        str(manifest["version"])
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{path}: the manifest needs a version and a numeric threshold") from None
    if not 0.0 <= threshold <= 1.0:
        raise BundleError(f"{path}: threshold {threshold!r} is not in [0, 1]")
    try:  # onnxruntime raises its own exception types, on load or on the first run
        predictor = CompiledPredictor((path / "model.onnx").read_bytes())
        smoke = predictor.predict_one([0.0] * len(features.names))
    except Exception as exc:
        raise BundleError(f"{path}: model.onnx does not load or run: {exc}") from None
    if not (math.isfinite(smoke) and 0.0 <= smoke <= 1.0):
        raise BundleError(f"{path}: smoke prediction {smoke!r} is not a probability")
    return Bundle(path=path, manifest=manifest, predictor=predictor)

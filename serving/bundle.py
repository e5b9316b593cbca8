"""The bundle format (DESIGN.md §3): reading and verifying a published model directory.

A bundle holds `manifest.json` (version, features, threshold, metrics, lineage ids and the
sha256 of every other file), `model.json` (XGBoost), `model.onnx` (the compiled serving
model), `model_card.md` and `lineage.json`. Nothing is trusted before its checksum matches.

Besides the full model, a bundle may hold a model per request profile (serving/profiles.py):
`profile-<name>.onnx` and `profile-<name>.json`, declared under the manifest's `profiles`
with their features, threshold and metrics. A bundle trained from precomputed features only
has no full model: its manifest says `"full_model": false` and lists no model.json or
model.onnx.

Every model must prove itself before it serves: `proof.json` holds, per model, a few real
holdout rows and the scores the trainer (XGBoost) gave them; loading re-scores them with the
compiled model and rejects any difference beyond 1e-5, any NaN, infinity or score outside
[0, 1]. An all-zeros smoke row (what older bundles, without a proof, still get) lets through
a model that is broken only on real inputs.

A bundle may be signed (serving/signatures.py): `manifest.sig` beside the manifest, an
Ed25519 signature of its exact bytes. When the service trusts public keys
(SENTINEL_BUNDLE_PUBLIC_KEYS), the signature is verified before anything in the manifest is
used, and an unsigned or badly signed bundle is rejected; without trusted keys it is not
checked.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from serving.features import (
    DEFAULT_FEATURE_SET,
    FeatureSet,
    feature_set_from_declaration,
)
from serving.predictor import CompiledPredictor, Rows, as_rows
from serving.profiles import FULL, ProfileError, RequestProfile, declare_profile, largest_first
from serving.signatures import SIGNATURE_FILE, SignatureError, verify_manifest

MANIFEST = "manifest.json"
PROOF_FILE = "proof.json"  # per model: real holdout rows and the trainer's scores for them
PROOF_TOLERANCE = 1e-5
MODEL_FILES = ("model.json", "model.onnx")
REQUIRED_FILES = (*MODEL_FILES, "model_card.md", "lineage.json")


def profile_files(name: str) -> tuple[str, str]:
    """(XGBoost, ONNX) file names of a profile's model in a bundle."""
    return f"profile-{name}.json", f"profile-{name}.onnx"


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
class ServedModel:
    """One model of a bundle: the full model (`columns` None: every feature) or a request
    profile's (`columns`: its features' positions in the full vector)."""

    profile: str
    features: tuple[str, ...]
    threshold: float
    predictor: CompiledPredictor
    columns: tuple[int, ...] | None = None

    def rows(self, vectors: list[list[float]]) -> Rows:
        return as_rows(vectors, self.columns)


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    models: dict[str, ServedModel]  # by profile; FULL unless the bundle has no full model
    signed_by: str | None = None  # the id of the trusted key its signature verified with

    # Cached: read for every scored event.
    @cached_property
    def version(self) -> str:
        return str(self.manifest["version"])

    @cached_property
    def full(self) -> ServedModel | None:
        return self.models.get(FULL)

    @cached_property
    def fallback(self) -> ServedModel:
        """What answers a profile this bundle has no model for: the full model, else the
        profile model with the most features."""
        if self.full is not None:
            return self.full
        return max(self.models.values(), key=lambda m: (len(m.features), m.profile))

    @cached_property
    def profiles(self) -> tuple[RequestProfile, ...]:
        """Its profile models' profiles, largest first (the order `wanted_profile` tries)."""
        own = [RequestProfile(m.profile, m.features) for m in self.models.values()]
        return largest_first([p for p in own if p.name != FULL])

    def model_for(self, profile: str) -> ServedModel:
        model = self.models.get(profile)
        return self.fallback if model is None else model

    @property
    def predictor(self) -> CompiledPredictor:
        """The full model's (KeyError in a bundle without one: callers check `full`)."""
        return self.models[FULL].predictor

    @property
    def threshold(self) -> float:
        return self.fallback.threshold


def _manifest_bytes(path: Path) -> bytes:
    try:
        return (Path(path) / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path}: no {MANIFEST}") from None
    except OSError as exc:
        raise BundleError(f"{path}: unreadable {MANIFEST}: {exc}") from None


def _parse_manifest(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"{path}: unreadable {MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: {MANIFEST} is not an object")
    return manifest


def read_manifest(path: Path) -> dict[str, Any]:
    return _parse_manifest(path, _manifest_bytes(path))


def verify_signature(path: Path, manifest: bytes, trusted: dict[str, Ed25519PublicKey]) -> str:
    """The id of the trusted key that signed these manifest bytes; BundleError says why not."""
    try:
        signature = (Path(path) / SIGNATURE_FILE).read_bytes()
    except FileNotFoundError:
        raise BundleError(
            f"{path}: unsigned: no {SIGNATURE_FILE}, and SENTINEL_BUNDLE_PUBLIC_KEYS is set "
            "(only bundles signed by a trusted key are loaded)"
        ) from None
    except OSError as exc:
        raise BundleError(f"{path}: unreadable {SIGNATURE_FILE}: {exc}") from None
    try:
        return verify_manifest(manifest, signature, trusted)
    except SignatureError as exc:
        raise BundleError(f"{path}: {exc}") from None


def has_full_model(manifest: dict[str, Any]) -> bool:
    return manifest.get("full_model", True) is not False  # older bundles: always


def verify_checksums(path: Path, manifest: dict[str, Any]) -> dict[str, bytes]:
    """Every listed file's content, read once and checked against its sha256: what is
    loaded is what was checked (a file swapped after the check is never read again)."""
    files = manifest.get("files")
    required = REQUIRED_FILES if has_full_model(manifest) else REQUIRED_FILES[len(MODEL_FILES) :]
    if not isinstance(files, dict) or set(required) - set(files):
        raise BundleError(f"{path}: manifest must list the sha256 of {', '.join(required)}")
    contents = {}
    for name, expected in files.items():
        target = Path(path) / name
        if not target.is_file():
            raise BundleError(f"{path}: {name} is missing")
        try:
            content = target.read_bytes()
        except OSError as exc:
            raise BundleError(f"{path}: unreadable {name}: {exc}") from None
        if hashlib.sha256(content).hexdigest() != expected:
            raise BundleError(f"{path}: {name} does not match its sha256 in the manifest")
        contents[name] = content
    return contents


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


def _threshold(path: Path, where: str, declared: dict[str, Any]) -> float:
    try:
        threshold = float(declared["threshold"])
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{path}: {where} needs a numeric threshold") from None
    if not 0.0 <= threshold <= 1.0:
        raise BundleError(f"{path}: {where} threshold {threshold!r} is not in [0, 1]")
    return threshold


def _proof_rows(path: Path, onnx_file: str, proof: Any, width: int) -> tuple[Any, list[float]]:
    """(rows as a float32 matrix, the trainer's scores) of one model's proof entry."""
    try:
        rows = np.array(
            [[math.nan if v is None else float(v) for v in row] for row in proof["rows"]],
            dtype=np.float32,
        ).reshape(-1, width)
        scores = [float(v) for v in proof["scores"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: the proof rows of {onnx_file} are malformed: {exc!r}") from None
    if not scores or len(scores) != len(rows):
        raise BundleError(f"{path}: the proof of {onnx_file} needs as many scores as rows")
    return rows, scores


def _predictor(
    path: Path, onnx_file: str, width: int, onnx: bytes, proof: Any = None
) -> CompiledPredictor:
    """The compiled model, loaded and proven: it must score the proof's real holdout rows as
    the trainer did (within PROOF_TOLERANCE), each a finite probability. A bundle published
    before proofs existed (`proof` None) is smoke-run on an all-zeros row instead, which a
    model broken only on real inputs passes."""
    rows, expected = (
        _proof_rows(path, onnx_file, proof, width)
        if proof is not None
        else (np.zeros((1, width), dtype=np.float32), None)
    )
    try:  # onnxruntime raises its own exception types, on load or on the first run
        predictor = CompiledPredictor(onnx)
        if predictor.width != width:
            raise BundleError(f"{path}: {onnx_file} reads {predictor.width} features, not {width}")
        scores = predictor.predict(rows)
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"{path}: {onnx_file} does not load or run: {exc}") from None
    for i, p in enumerate(scores.tolist()):
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            what = "smoke prediction" if expected is None else f"score of proof row {i}"
            raise BundleError(f"{path}: {onnx_file}'s {what} {p!r} is not a probability")
        if expected is not None and abs(p - expected[i]) > PROOF_TOLERANCE:
            raise BundleError(
                f"{path}: {onnx_file} scores proof row {i} {p!r}, the trainer {expected[i]!r}: "
                f"more than {PROOF_TOLERANCE:g} apart"
            )
    return predictor


def _read_proof(path: Path, contents: dict[str, bytes]) -> dict[str, Any] | None:
    """The bundle's proof.json (checksummed like every file), None for an older bundle."""
    if PROOF_FILE not in contents:
        return None
    try:
        proof = json.loads(contents[PROOF_FILE])
    except ValueError as exc:
        raise BundleError(f"{path}: unreadable {PROOF_FILE}: {exc}") from None
    if not isinstance(proof, dict):
        raise BundleError(f"{path}: {PROOF_FILE} is not an object")
    return proof


def _model_proof(path: Path, proofs: dict[str, Any] | None, name: str) -> Any:
    if proofs is None:
        return None
    if name not in proofs:
        raise BundleError(f"{path}: {PROOF_FILE} has no rows for the {name} model")
    return proofs[name]


def _profile_models(
    path: Path, manifest: dict[str, Any], contents: dict[str, bytes], proofs: dict[str, Any] | None
) -> dict[str, ServedModel]:
    declared = manifest.get("profiles") or {}
    if not isinstance(declared, dict):
        raise BundleError(f"{path}: the manifest's profiles must be an object")
    models = {}
    for name, entry in declared.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("features"), list):
            raise BundleError(f"{path}: profile {name!r} needs a list of features")
        try:
            profile: RequestProfile = declare_profile(str(name), entry["features"])
        except (TypeError, ProfileError) as exc:
            raise BundleError(f"{path}: profile {name!r}: {exc}") from None
        if list(profile.features) != list(entry["features"]):
            raise BundleError(f"{path}: profile {name}'s features are not in feature-set order")
        _, onnx_file = profile_files(profile.name)
        if onnx_file not in manifest["files"]:
            raise BundleError(f"{path}: manifest must list the sha256 of {onnx_file}")
        models[profile.name] = ServedModel(
            profile.name,
            profile.features,
            _threshold(path, f"profile {name}", entry),
            _predictor(
                path,
                onnx_file,
                len(profile.features),
                contents[onnx_file],
                _model_proof(path, proofs, profile.name),
            ),
            profile.columns,
        )
    return models


def load_bundle(
    path: Path,
    features: FeatureSet = DEFAULT_FEATURE_SET,
    trusted_keys: dict[str, Ed25519PublicKey] | None = None,
) -> Bundle:
    """Verify and load a bundle whose feature set is `features`; BundleError says why not.

    With `trusted_keys` (by key id) the bundle must be signed by one of them; None: its
    signature, if any, is not checked."""
    path = Path(path)
    raw = _manifest_bytes(path)  # verified and parsed from the same bytes: no swap between
    signed_by = None if trusted_keys is None else verify_signature(path, raw, trusted_keys)
    manifest = _parse_manifest(path, raw)
    contents = verify_checksums(path, manifest)
    check_feature_set(path, manifest, features)
    if manifest.get("features") != list(features.names):
        raise BundleError(f"{path}: its feature list differs from its feature_set declaration")
    if not isinstance(manifest.get("version"), str | int):
        raise BundleError(f"{path}: the manifest needs a version")
    proofs = _read_proof(path, contents)
    models = _profile_models(path, manifest, contents, proofs)
    if has_full_model(manifest):
        models[FULL] = ServedModel(
            FULL,
            features.names,
            _threshold(path, "the manifest", manifest),
            _predictor(
                path,
                "model.onnx",
                len(features.names),
                contents["model.onnx"],
                _model_proof(path, proofs, FULL),
            ),
        )
    elif not models:
        raise BundleError(f"{path}: no full model and no profile model: nothing to score with")
    return Bundle(path=path, manifest=manifest, models=models, signed_by=signed_by)

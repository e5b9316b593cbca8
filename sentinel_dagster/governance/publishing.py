"""Publishing a bundle: write it complete under a temporary name, then rename it into place.

The first published bundle becomes champion, later ones challenger, except that a bundle
replaces a champion of another feature set (after an upgrade or a change of label maturity)
at once. A published bundle is never modified again (files are made read-only); only the
pointers move.

With a signing key (signing_keys.py) the manifest is signed: `manifest.sig` beside it
(serving/signatures.py), written in the temporary folder like every other file. Without one,
bundles are published unsigned.
"""

import datetime as dt
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel_dagster.governance.signing_keys import FROM_ENV, FromEnv, signing_key_from_env
from sentinel_dagster.monitoring.reference import DRIFT_REFERENCE_FILE
from serving.bundle import (
    MANIFEST,
    PROOF_FILE,
    BundleError,
    profile_files,
    serves_feature_set,
    sha256_file,
)
from serving.features import DEFAULT_FEATURE_SET, FeatureSet
from serving.registry import Registry
from serving.signatures import SIGNATURE_FILE, SigningKey

TEMPLATE = Path(__file__).resolve().parents[2] / "mlops" / "model_card_template.md"


@dataclass(frozen=True)
class ProfileContent:
    """A request profile's model (serving/profiles.py), published beside the full model."""

    name: str
    features: tuple[str, ...]  # in feature-set order: the model's input columns
    model_json: bytes
    model_onnx: bytes
    threshold: float
    metrics: dict[str, float]
    onnx_parity_max_abs_diff: float


@dataclass(frozen=True)
class BundleContent:
    model_json: bytes | None  # XGBoost's own format; None: no full model (profiles only)
    model_onnx: bytes | None
    threshold: float | None  # the full model's
    metrics: dict[str, float] | None
    data_fingerprint: str
    code_version: str
    mlflow_run_id: str
    mlflow_model_version: str | None
    lineage: dict[str, Any]
    card_fields: dict[str, str]  # extra values for the model card template
    feature_set: FeatureSet = DEFAULT_FEATURE_SET  # as replayed for training, lags included
    profiles: tuple[ProfileContent, ...] = ()
    # Per model ("full", each profile): real holdout rows and the trainer's scores, which the
    # service re-scores before serving (serving/bundle.py); None only for test doubles.
    proof: dict[str, Any] | None = None
    # What the model's inputs and scores looked like (monitoring/reference.py), for the
    # drift watch; None: the bundle carries none and the watch says so.
    drift_reference: dict[str, Any] | None = None


def render_model_card(fields: dict[str, str], template: Path = TEMPLATE) -> str:
    text = template.read_text()
    for key, value in fields.items():
        text = text.replace("{{ " + key + " }}", value)
    return text


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _other_feature_set(registry: Registry, version: str, features: FeatureSet) -> bool:
    """True if the bundle is sound but declares another feature set; an unreadable one is
    not replaced on that ground (it stays champion until someone looks at it)."""
    try:
        return serves_feature_set(registry.bundle_dir(version), features) is not None
    except BundleError:
        return False


def publish(
    registry: Registry,
    content: BundleContent,
    now: dt.datetime | None = None,
    signing_key: SigningKey | FromEnv | None = FROM_ENV,
) -> tuple[str, str]:
    """Write the bundle atomically and point at it; returns (version, role).

    `signing_key` signs the manifest (None: unsigned); by default the environment's
    (`signing_key_from_env`), resolved before anything is written, so a misconfigured key
    publishes nothing."""
    if signing_key is FROM_ENV:
        signing_key = signing_key_from_env()
    now = now or dt.datetime.now(dt.UTC)
    version = f"{now:%Y%m%dT%H%M%S}-{content.mlflow_run_id[:8]}"
    full_model = content.model_json is not None and content.model_onnx is not None
    if not full_model and not content.profiles:
        raise ValueError("a bundle needs a full model or at least one profile model")
    registry.clean_stale()  # what killed publishes left behind
    tmp = registry.bundles / f".tmp-{version}"
    tmp.mkdir(parents=True)
    files: dict[str, bytes] = {}
    if content.model_json is not None and content.model_onnx is not None:
        files |= {"model.json": content.model_json, "model.onnx": content.model_onnx}
    for profile in content.profiles:
        json_file, onnx_file = profile_files(profile.name)
        files |= {json_file: profile.model_json, onnx_file: profile.model_onnx}
    if content.proof is not None:
        files[PROOF_FILE] = json.dumps(content.proof).encode()
    if content.drift_reference is not None:
        files[DRIFT_REFERENCE_FILE] = json.dumps(content.drift_reference, sort_keys=True).encode()
    files |= {
        "lineage.json": json.dumps(content.lineage, indent=2, sort_keys=True).encode(),
        "model_card.md": render_model_card(
            {"version": version, "created_at": now.isoformat(), **content.card_fields}
        ).encode(),
    }
    for name, data in files.items():
        _write(tmp / name, data)
    manifest = {
        "version": version,
        "created_at": now.isoformat(),
        "features": list(content.feature_set.names),
        "feature_set": content.feature_set.declaration(),
        "feature_set_fingerprint": content.feature_set.fingerprint(),
        "full_model": full_model,
        "threshold": content.threshold,
        "metrics": content.metrics,
        "profiles": {
            p.name: {
                "features": list(p.features),
                "threshold": p.threshold,
                "metrics": p.metrics,
                "onnx_parity_max_abs_diff": p.onnx_parity_max_abs_diff,
            }
            for p in content.profiles
        },
        "data_fingerprint": content.data_fingerprint,
        "code_version": content.code_version,
        "mlflow_run_id": content.mlflow_run_id,
        "mlflow_model_version": content.mlflow_model_version,
        "files": {name: sha256_file(tmp / name) for name in files},
    }
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    _write(tmp / MANIFEST, manifest_bytes)
    if signing_key is not None:  # over the bytes just written: what the service will read
        _write(tmp / SIGNATURE_FILE, signing_key.signature_file(manifest_bytes))
    for path in tmp.iterdir():
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    os.replace(tmp, registry.bundle_dir(version))
    champion = registry.pointer("champion")
    if champion is None:
        role = "champion"
    elif _other_feature_set(registry, champion, content.feature_set):
        # A service computing the new feature set refuses the old champion anyway: the new
        # bundle replaces it at once, and rollback can still restore it.
        registry.set_pointer("previous_champion", champion)
        registry.set_pointer("challenger", None)
        role = "champion"
    else:
        role = "challenger"
    registry.set_pointer(role, version)
    return version, role

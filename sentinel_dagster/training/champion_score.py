"""The served champion's metrics, which the promotion gate judges a candidate against.

Metrics from two holdouts are not comparable, so the lineage's gate re-scores the champion's
bundle on the candidate's own holdout (`score_on_holdout`). `sentinel check-promotion` is
given a metadata file, not data: it re-scores the champion the same way when the training
set stored under SENTINEL_HOME is the one the candidate was trained on (the same data
fingerprint), and otherwise falls back on the metrics in the champion's manifest, measured
on the champion's own holdout, which its output says (`champion_for`).
"""

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sentinel_dagster.training.bundle_models import score_bundle
from sentinel_dagster.training.evaluation import compromised_before_holdout
from sentinel_dagster.training.training_data import (
    FINGERPRINT_COLUMNS,
    Period,
    fingerprint,
    from_frame,
)
from serving.bundle import load_bundle, read_manifest, serves_feature_set
from serving.features import FeatureSet
from serving.profiles import FULL
from serving.registry import Registry

ON_CANDIDATE_HOLDOUT = "re-scored on the candidate's holdout"
ON_OWN_HOLDOUT = "from its manifest, measured on its own holdout"


@dataclass(frozen=True)
class ChampionScore:
    version: str | None  # None: no champion yet
    # Flat metrics by model (profile); None for a model this holdout cannot score.
    models: dict[str, dict[str, float] | None] = field(default_factory=dict)
    incomparable: str | None = None  # why it cannot be compared at all (another feature set)
    measured: str = ON_CANDIDATE_HOLDOUT

    def for_gate(self) -> dict[str, dict[str, float] | None] | None:
        """The `champion` of promotion.decide_bundle: None when there is no champion."""
        if self.version is None:
            return None
        return {} if self.incomparable is not None else self.models


def score_champion(
    registry: Registry,
    features: FeatureSet,
    holdout: Period,
    compromised: frozenset[str] = frozenset(),
) -> ChampionScore:
    """The current champion scored on `holdout`, if its feature set is the candidate's (a
    champion of another one cannot read this holdout's features); BundleError if its
    bundle cannot be loaded."""
    version = registry.pointer("champion")
    if version is None:
        return ChampionScore(None)
    path = registry.bundle_dir(version)
    incomparable = serves_feature_set(path, features)
    if incomparable is not None:
        return ChampionScore(version, incomparable=incomparable)
    scored = score_bundle(load_bundle(path, features), holdout, compromised)
    return ChampionScore(
        version, {name: None if m is None else m.flat() for name, m in scored.items()}
    )


def score_on_holdout(
    registry: Registry, training_set: pd.DataFrame, features: FeatureSet
) -> ChampionScore:
    """The current champion scored on the training set's holdout, as the lineage's gate
    scores it (the cards known compromised before it set apart)."""
    if registry.pointer("champion") is None:
        return ChampionScore(None)  # no need to rebuild the split
    data = from_frame(training_set)
    return score_champion(registry, features, data.holdout, compromised_before_holdout(data))


def from_manifest(registry: Registry, features: FeatureSet) -> ChampionScore:
    """The current champion's metrics as its manifest records them (its own holdout's);
    BundleError if the manifest cannot be read."""
    version = registry.pointer("champion")
    if version is None:
        return ChampionScore(None)
    path = registry.bundle_dir(version)
    incomparable = serves_feature_set(path, features)
    manifest = read_manifest(path)
    models = {name: p.get("metrics") for name, p in (manifest.get("profiles") or {}).items()}
    if manifest.get("full_model", True) and manifest.get("metrics"):
        models = {FULL: manifest["metrics"], **models}
    return ChampionScore(version, models, incomparable, ON_OWN_HOLDOUT)


def _is_training_set_of(stored: Path, data_fingerprint: str | None) -> bool:
    if data_fingerprint is None or not stored.is_file():
        return False
    try:
        keys = pd.read_parquet(stored, columns=FINGERPRINT_COLUMNS)
    except (OSError, ValueError, KeyError):  # not a training set this code wrote
        return False
    return fingerprint(keys) == data_fingerprint


def champion_for(
    registry: Registry, features: FeatureSet, data_fingerprint: str | None, stored: Path
) -> ChampionScore:
    """The champion as the lineage's gate judged it when `stored` (the training_set asset's
    Parquet file) holds the candidate's data, else as its manifest records it."""
    if registry.pointer("champion") is None:
        return ChampionScore(None)
    if _is_training_set_of(stored, data_fingerprint):
        return score_on_holdout(registry, pd.read_parquet(stored), features)
    return from_manifest(registry, features)

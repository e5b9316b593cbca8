"""Promotion and rollback move the registry pointers and the MLflow aliases together."""

import datetime as dt
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from sentinel_dagster.governance.champion import ChampionError, promote_challenger, rollback
from sentinel_dagster.training import mlflow_tracking
from serving.features import FeatureSet
from serving.registry import Registry
from tests.serving.bundles import publish_booster, publish_small, small_booster


def _with_mlflow_versions(home: Path, registry: Registry, count: int) -> list[str]:
    """Publish `count` bundles whose manifests name registered MLflow model versions."""
    import json

    mlflow_tracking.use_local_store(home)
    client = MlflowClient()
    client.create_registered_model(mlflow_tracking.REGISTERED_MODEL)
    versions = []
    for seed in range(count):
        model_version = client.create_model_version(
            mlflow_tracking.REGISTERED_MODEL, source=str(home / f"m{seed}")
        ).version
        version, _ = publish_small(registry, seed=seed, minute=seed)
        manifest_path = registry.bundle_dir(version) / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["mlflow_model_version"] = str(model_version)
        manifest_path.chmod(0o644)
        manifest_path.write_text(json.dumps(manifest))
        versions.append(version)
    return versions


def _aliases(home: Path) -> dict[str, int]:
    mlflow.set_tracking_uri(mlflow_tracking.tracking_uri(home))
    model = MlflowClient().get_registered_model(mlflow_tracking.REGISTERED_MODEL)
    return dict(model.aliases)


def test_promotion_then_rollback_with_mlflow_aliases(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    first, second = _with_mlflow_versions(tmp_path, registry, 2)
    assert registry.pointers() == {"champion": first, "challenger": second,
                                   "previous_champion": None}  # fmt: skip
    move = promote_challenger(registry, second, first, tmp_path)
    assert (move.champion, move.replaced) == (second, first)
    assert registry.pointers() == {"champion": second, "challenger": None,
                                   "previous_champion": first}  # fmt: skip
    assert _aliases(tmp_path) == {"champion": 2, "previous_champion": 1}
    back = rollback(registry, tmp_path)
    assert (back.champion, back.replaced) == (first, second)
    assert registry.pointers() == {"champion": first, "challenger": None,
                                   "previous_champion": None}  # fmt: skip
    assert _aliases(tmp_path) == {"champion": 1}


def test_promotion_is_refused_when_the_registry_moved_since_the_report(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    first, _ = publish_small(registry, seed=1)
    second, _ = publish_small(registry, seed=2, minute=1)
    third, _ = publish_small(registry, seed=3, minute=2)  # replaces the judged challenger
    with pytest.raises(ChampionError, match="changed since the report"):
        promote_challenger(registry, second, first)
    assert registry.pointers() == {"champion": first, "challenger": third,
                                   "previous_champion": None}  # fmt: skip


def test_rollback_without_a_previous_champion_changes_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    first, _ = publish_small(registry, seed=1)
    with pytest.raises(ChampionError, match="no previous champion"):
        rollback(registry)
    assert registry.pointer("champion") == first


def test_an_alias_follows_to_a_bundle_outside_mlflow_by_going_away(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    (first,) = _with_mlflow_versions(tmp_path, registry, 1)
    imported, _ = publish_small(registry, seed=9, minute=9)  # no registered MLflow version
    move = promote_challenger(registry, imported, first, tmp_path)
    assert move.alias_error is None
    assert _aliases(tmp_path) == {"previous_champion": 1}  # no stale "champion" alias


def test_a_bundle_replaces_a_champion_of_another_feature_set_at_once(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    booster = small_booster(seed=4)
    when = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    old, _ = publish_booster(registry, booster, 0.5, "run-old-1", when,
                             FeatureSet(label_maturity_days=14))  # fmt: skip
    same, role = publish_booster(
        registry, booster, 0.5, "run-same-2", when + dt.timedelta(minutes=1),
        FeatureSet(label_maturity_days=14),
    )  # fmt: skip
    assert role == "challenger"  # same feature set: shadowed first, as usual
    new, role = publish_booster(registry, booster, 0.5, "run-new-3",
                                when + dt.timedelta(minutes=2))  # fmt: skip
    assert role == "champion"  # a service computing the new set could not serve the old one
    assert registry.pointers() == {
        "champion": new, "challenger": None, "previous_champion": old,
    }  # fmt: skip
    assert same != new


def test_the_gate_judges_a_candidate_against_the_heuristic_when_the_champion_is_incomparable(
) -> None:  # fmt: skip
    from sentinel_dagster.core.policy import PromotionPolicy
    from sentinel_dagster.governance.promotion import decide

    metrics = {"pr_auc": 0.8, "recall_at_1pct_fpr": 0.7}
    heuristic = {"pr_auc": 0.2, "recall_at_1pct_fpr": 0.3}
    decision = decide(metrics, PromotionPolicy(), heuristic=heuristic,
                      champion_incomparable="feature set sentinel v1")  # fmt: skip
    assert decision.passed
    champion = next(c for c in decision.checks if c.name == "champion")
    assert "cannot be scored on this holdout (feature set sentinel v1)" in champion.detail


def test_a_champion_with_an_unreadable_manifest_is_not_replaced_as_another_feature_set(
    tmp_path: Path,
) -> None:
    from serving.bundle import BundleError, serves_feature_set
    from tests.serving.bundles import make_writable

    registry = Registry(tmp_path / "registry")
    booster = small_booster(seed=4)
    when = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    old, _ = publish_booster(registry, booster, 0.5, "run-old-1", when)
    make_writable(registry.bundle_dir(old))
    (registry.bundle_dir(old) / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"unreadable manifest\.json"):
        serves_feature_set(registry.bundle_dir(old), FeatureSet())
    _, role = publish_booster(registry, booster, 0.5, "run-new-2",
                                when + dt.timedelta(minutes=1))  # fmt: skip
    assert role == "challenger"  # corrupt is not "another feature set": no silent takeover
    assert registry.pointer("champion") == old

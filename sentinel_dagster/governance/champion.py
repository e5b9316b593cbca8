"""Moving the serving champion: promotion of the shadowed challenger, and rollback.

Both act on the registry pointers (atomic swaps the service hot-reloads) and mirror them as
MLflow aliases on the registered model versions named in the bundles' manifests. A bundle
published without a registered MLflow version (an imported one) just has no alias.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from sentinel_dagster.training import mlflow_tracking
from serving.registry import Registry


class ChampionError(ValueError):
    """The move cannot be made; the message says why (nothing was changed)."""


@dataclass(frozen=True)
class ChampionMove:
    champion: str  # now serving
    replaced: str | None  # what it replaced
    alias_error: str | None = None  # the pointers moved, but MLflow's aliases could not follow


def _mlflow_version(registry: Registry, version: str | None) -> str | None:
    if version is None:
        return None
    manifest = json.loads((registry.bundle_dir(version) / "manifest.json").read_text())
    value = manifest.get("mlflow_model_version")
    return None if value is None else str(value)


def _mirror(registry: Registry, home: Path | None) -> str | None:
    """Make the MLflow aliases name what the pointers name (an alias whose bundle has no
    registered version is removed); None, or why they could not follow. The pointers are
    what the service follows, so they stay moved either way."""
    if home is None:
        return None
    try:
        aliases = {name: _mlflow_version(registry, v) for name, v in registry.pointers().items()}
        mlflow_tracking.use_local_store(home)
        for alias, model_version in aliases.items():
            if model_version is None:
                mlflow_tracking.delete_alias(alias)
            else:
                mlflow_tracking.set_alias(alias, model_version)
    except Exception as exc:  # MLflow's store, or an unreadable manifest
        return f"{type(exc).__name__}: {exc}"
    return None


def promote_challenger(
    registry: Registry,
    expected_challenger: str,
    expected_champion: str | None,
    home: Path | None = None,
) -> ChampionMove:
    """Challenger → champion, champion → previous_champion, no challenger. Refused unless the
    pointers still name the pair the evidence was about."""
    challenger, champion = registry.pointer("challenger"), registry.pointer("champion")
    if challenger != expected_challenger or champion != expected_champion:
        raise ChampionError(
            f"the registry changed since the report: champion {champion}, challenger "
            f"{challenger} (the report judged {expected_champion} and {expected_challenger})"
        )
    if champion is not None:
        registry.set_pointer("previous_champion", champion)
    registry.set_pointer("champion", challenger)
    registry.set_pointer("challenger", None)
    return ChampionMove(challenger, champion, _mirror(registry, home))


def rollback(registry: Registry, home: Path | None = None) -> ChampionMove:
    """previous_champion → champion; the rolled-back one is no longer served."""
    previous, champion = registry.pointer("previous_champion"), registry.pointer("champion")
    if previous is None:
        raise ChampionError("there is no previous champion to roll back to")
    registry.set_pointer("champion", previous)
    registry.set_pointer("previous_champion", None)
    if registry.pointer("challenger") == previous:
        registry.set_pointer("challenger", None)
    return ChampionMove(previous, champion, _mirror(registry, home))

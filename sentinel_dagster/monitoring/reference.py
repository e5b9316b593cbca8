"""The drift reference a bundle carries: what its model's inputs and scores looked like.

The drift watch compares the champion's live traffic with it, and the champion may come from
an older run whose training set is gone, so the reference travels inside the bundle as
`drift_reference.json` (listed in the manifest's checksums like every file). It holds, for
the model the bundle answers with (the full model, or a request profile's in a bundle
without one):

- per feature of that model: quantile bins (deciles) of its values, each cut point a bin of
  its own, and the share of rows in each bin and missing (core/stability.py QuantileBins);
- the model's scores on the same rows, binned the same way;
- its decline rate on those rows at its threshold.

The rows are the candidate's holdout: the latest period of its training set, the one the
gate judged it on. Its earlier training rows are not a fair picture of live inputs, because
the feature replay starts from an empty state: in the training period the 30-day windows are
still filling (on a 60-day simulated log, `txn_count_30d` has PSI 1.1 between the training
rows and the holdout, `merchant_txn_count_30d_lagged` 1.8), so live traffic would look
drifted from the first hour.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sentinel_dagster.core.stability import QuantileBins
from serving.bundle import MANIFEST

DRIFT_REFERENCE_FILE = "drift_reference.json"
FORMAT = 1


class DriftReferenceError(ValueError):
    """A bundle's drift reference is present but unusable; the message says why."""


@dataclass(frozen=True)
class DriftReference:
    model: str  # "full" or a request profile: the model whose inputs and scores these are
    features: dict[str, QuantileBins]  # in the model's feature order
    scores: QuantileBins
    threshold: float
    decline_rate: float  # share of the rows the model scores at or above its threshold
    rows: int
    computed_from: str  # which rows, e.g. "holdout 2026-01-01 .. 2026-01-07"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "computed_from": self.computed_from,
            "rows": self.rows,
            "threshold": self.threshold,
            "decline_rate": self.decline_rate,
            "scores": self.scores.to_dict(),
            # a list, not an object: the model's order survives JSON written with sorted keys
            "features": [{"name": name, **bins.to_dict()} for name, bins in self.features.items()],
        }

    @classmethod
    def from_dict(cls, raw: Any) -> "DriftReference":
        """From `to_dict`'s form; DriftReferenceError naming what is wrong otherwise."""
        if not isinstance(raw, dict):
            raise DriftReferenceError("not a JSON object")
        if raw.get("format") != FORMAT:
            raise DriftReferenceError(f"format {raw.get('format')!r}, this code reads {FORMAT}")
        try:
            features = raw["features"]
            if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
                raise DriftReferenceError("'features' is not a list of objects")
            return cls(
                model=str(raw["model"]),
                features={str(f["name"]): QuantileBins.from_dict(f) for f in features},
                scores=QuantileBins.from_dict(raw["scores"]),
                threshold=float(raw["threshold"]),
                decline_rate=float(raw["decline_rate"]),
                rows=int(raw["rows"]),
                computed_from=str(raw["computed_from"]),
            )
        except KeyError as exc:
            raise DriftReferenceError(f"no {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise DriftReferenceError(str(exc)) from None


def build_reference(
    model: str,
    rows: pd.DataFrame,
    features: Sequence[str],
    scores: np.ndarray,
    threshold: float,
    computed_from: str,
) -> DriftReference:
    """The reference of `model` from `rows` (a column per feature) and its scores on them."""
    scores = np.asarray(scores, dtype=float)
    if len(rows) == 0 or len(scores) != len(rows):
        raise ValueError(f"{len(rows)} rows and {len(scores)} scores: need as many, at least one")
    missing = [name for name in features if name not in rows]
    if missing:
        raise ValueError(f"the rows lack the model's features: {', '.join(missing)}")
    return DriftReference(
        model=model,
        features={name: QuantileBins.of(rows[name].to_numpy(dtype=float)) for name in features},
        scores=QuantileBins.of(scores),
        threshold=float(threshold),
        decline_rate=float(np.mean(scores >= threshold)),
        rows=len(rows),
        computed_from=computed_from,
    )


def period_label(name: str, times: pd.Series) -> str:
    """'holdout 2026-01-01 .. 2026-01-07' for a period's event times (or just the name)."""
    if times.empty:
        return name
    return f"{name} {times.min():%Y-%m-%d} .. {times.max():%Y-%m-%d}"


def read_reference(bundle_dir: Path) -> DriftReference | None:
    """The bundle's reference; None for a bundle published without one (before bundles
    carried it). DriftReferenceError if it is unreadable or does not match the manifest."""
    path = Path(bundle_dir) / DRIFT_REFERENCE_FILE
    if not path.is_file():
        return None
    where = f"{path}"
    try:
        manifest = json.loads((Path(bundle_dir) / MANIFEST).read_text())
        listed = manifest["files"].get(DRIFT_REFERENCE_FILE)
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        raise DriftReferenceError(f"{where}: the bundle's {MANIFEST} is unreadable") from None
    try:
        content = path.read_bytes()  # read once: what is checked is what is parsed
    except OSError as exc:
        raise DriftReferenceError(f"{where}: unreadable: {exc}") from None
    if listed != hashlib.sha256(content).hexdigest():
        raise DriftReferenceError(f"{where}: does not match the checksum in {MANIFEST}")
    try:
        raw = json.loads(content)
    except ValueError as exc:
        raise DriftReferenceError(f"{where}: unreadable: {exc}") from None
    try:
        return DriftReference.from_dict(raw)
    except DriftReferenceError as exc:
        raise DriftReferenceError(f"{where}: {exc}") from None

"""The champion's own reasons for `?explain=true`: per-feature contributions from
XGBoost's exact TreeSHAP (`pred_contribs`) on the bundle's `model.json`.

Loaded on the first explain request of a bundle and about a millisecond a call, so it is
kept off the plain scoring path, whose `reasons` are the heuristic's reason codes.
Contributions are in log-odds: with the bias they add up to the model's margin, whose
sigmoid is `fraud_probability` (tested).
"""

import threading
from pathlib import Path
from typing import Any

import numpy as np

from serving.features import FEATURE_NAMES

TOP = 5


class Explainer:
    def __init__(self, model_json: Path) -> None:
        import xgboost as xgb  # here: a service that never explains never loads XGBoost

        self._xgb: Any = xgb
        self._booster = xgb.Booster(model_file=str(model_json))
        self._booster.set_param({"nthread": 1})
        self._lock = threading.Lock()  # one Booster, predictions one at a time

    def contributions(self, vector: list[float]) -> np.ndarray:
        """Log-odds contribution of each feature (FEATURE_NAMES order), then the bias."""
        matrix = self._xgb.DMatrix(
            np.array([vector], dtype=np.float32), feature_names=list(FEATURE_NAMES)
        )
        with self._lock:
            return np.asarray(self._booster.predict(matrix, pred_contribs=True)[0])

    def top(self, vector: list[float], k: int = TOP) -> list[dict[str, float | str | None]]:
        """The `k` features that moved the score most, strongest first."""
        contributions = self.contributions(vector)[: len(FEATURE_NAMES)]
        order = np.argsort(-np.abs(contributions), kind="stable")[:k]
        return [
            {
                "feature": FEATURE_NAMES[i],
                "value": None if vector[i] != vector[i] else float(vector[i]),
                "contribution": round(float(contributions[i]), 6),
            }
            for i in order
        ]

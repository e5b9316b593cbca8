"""Compiling the XGBoost booster to ONNX for the serving predictor, with a parity proof."""

import numpy as np
import onnx
import xgboost as xgb
from onnxmltools import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType

from serving.features import FEATURE_NAMES
from serving.predictor import CompiledPredictor

PARITY_TOLERANCE = 1e-5
ONNX_OPSET = 15


class ParityError(ValueError):
    """The compiled model disagrees with XGBoost beyond the tolerance."""


def to_onnx(booster: xgb.Booster) -> bytes:
    """The booster as ONNX, as wide as it was trained: every feature in FEATURE_NAMES order
    for the full model, a request profile's features (in that order) for a profile model."""
    # onnxmltools expects feature names f0..fN; the column order is the training order.
    width = booster.num_features() or len(FEATURE_NAMES)
    plain = booster.copy()
    plain.feature_names = None
    model = convert_xgboost(
        plain,
        initial_types=[("input", FloatTensorType([None, width]))],
        target_opset=ONNX_OPSET,
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check_parity(booster: xgb.Booster, onnx_bytes: bytes, features: np.ndarray) -> float:
    """Max |XGBoost - ONNX| over `features`; raises ParityError beyond PARITY_TOLERANCE."""
    expected = booster.inplace_predict(features).astype(np.float64)
    actual = CompiledPredictor(onnx_bytes).predict(features)
    gap = float(np.max(np.abs(expected - actual))) if len(features) else 0.0
    if not gap <= PARITY_TOLERANCE:
        raise ParityError(f"compiled model differs from XGBoost by {gap:.2e} > {PARITY_TOLERANCE}")
    return gap

"""Real bundles for serving tests: a small XGBoost model, compiled and published."""

import datetime as dt
from pathlib import Path

import numpy as np
import xgboost as xgb

from sentinel_dagster.governance.publishing import BundleContent, ProfileContent, publish
from sentinel_dagster.training.bundle_models import proof_of
from sentinel_dagster.training.compile_model import to_onnx
from serving.features import DEFAULT_FEATURE_SET, FEATURE_INDEX, FEATURE_NAMES, FeatureSet
from serving.profiles import DEFAULT_PROFILES, RequestProfile
from serving.registry import Registry
from serving.signatures import SigningKey

# The seed README's curl example, field for field.
SEED_REQUEST = {
    "amount": 120.0,
    "hour_of_day": 14,
    "days_since_last_txn": 1.5,
    "txn_count_24h": 3,
    "distinct_merchants_24h": 2,
    "avg_amount_7d": 95.0,
    "channel_online": 0,
}


def small_booster(seed: int = 0, rounds: int = 20) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3_000, len(FEATURE_NAMES))).astype(np.float32)
    y = (x[:, FEATURE_INDEX["txn_count_10m"]] + rng.normal(size=3_000) > 1.2).astype(int)
    data = xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES))
    return xgb.train({"objective": "binary:logistic", "max_depth": 3, "seed": seed}, data, rounds)


def proof(booster: xgb.Booster, seed: int = 0) -> dict:
    """Rows like the training data's, with XGBoost's scores: the bundle's proof."""
    rows = np.random.default_rng(seed).normal(size=(32, booster.num_features()))
    return proof_of(booster, rows)


def publish_booster(
    registry: Registry,
    booster: xgb.Booster,
    threshold: float,
    run_id: str,
    now: dt.datetime | None = None,
    features: FeatureSet = DEFAULT_FEATURE_SET,
    signing_key: SigningKey | None = None,
) -> tuple[str, str]:
    """Compile and publish a trained booster as the lineage would: (version, role); signed
    with `signing_key`, else unsigned (whatever the environment says)."""
    content = BundleContent(
        model_json=bytes(booster.save_raw("json")),
        model_onnx=to_onnx(booster),
        threshold=threshold,
        metrics={"pr_auc": 0.8},
        data_fingerprint=f"test-{run_id}",
        code_version="test",
        mlflow_run_id=run_id,
        mlflow_model_version=None,
        lineage={"test": True},
        card_fields={},
        feature_set=features,
        proof={"full": proof(booster)},
    )
    return publish(registry, content, now=now, signing_key=signing_key)


def publish_small(registry: Registry, seed: int = 0, minute: int = 0) -> tuple[str, str]:
    when = dt.datetime(2026, 1, 1, 12, minute, tzinfo=dt.UTC)
    return publish_booster(registry, small_booster(seed), 0.5, f"run{seed:04d}abcdef", when)


def make_writable(path: Path) -> None:
    for file in path.iterdir():
        file.chmod(0o644)


def profile_booster(profile: RequestProfile, seed: int = 0) -> xgb.Booster:
    """A small model on a profile's features: fraud when the card's 24-hour count (or, in a
    profile without it, the first feature) is high."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3_000, len(profile.features))).astype(np.float32)
    signal = profile.features.index("txn_count_24h") if "txn_count_24h" in profile.features else 0
    x[:, signal] = rng.integers(0, 20, 3_000)
    y = (x[:, signal] + rng.normal(size=3_000) > 9).astype(int)
    data = xgb.DMatrix(x, label=y, feature_names=list(profile.features))
    return xgb.train({"objective": "binary:logistic", "max_depth": 3, "seed": seed}, data, 20)


def publish_with_profiles(
    registry: Registry,
    seed: int = 0,
    minute: int = 0,
    full: bool = True,
    profiles: tuple[RequestProfile, ...] = DEFAULT_PROFILES,
    threshold: float = 0.5,
) -> tuple[str, str]:
    """A bundle with a model per profile (each on its own features) and, if `full`, the
    full model: (version, role)."""
    booster = small_booster(seed)
    models = [(p, profile_booster(p, seed)) for p in profiles]
    content = BundleContent(
        model_json=bytes(booster.save_raw("json")) if full else None,
        model_onnx=to_onnx(booster) if full else None,
        threshold=threshold if full else None,
        metrics={"pr_auc": 0.8} if full else None,
        data_fingerprint=f"test-{seed}",
        code_version="test",
        mlflow_run_id=f"run{seed:04d}profile",
        mlflow_model_version=None,
        lineage={"test": True},
        card_fields={},
        profiles=tuple(
            ProfileContent(
                name=p.name,
                features=p.features,
                model_json=bytes(b.save_raw("json")),
                model_onnx=to_onnx(b),
                threshold=threshold,
                metrics={"pr_auc": 0.7},
                onnx_parity_max_abs_diff=0.0,
            )
            for p, b in models
        ),
        proof=({"full": proof(booster)} if full else {}) | {p.name: proof(b) for p, b in models},
    )
    when = dt.datetime(2026, 1, 1, 12, minute, tzinfo=dt.UTC)
    return publish(registry, content, now=when)


def nan_above_zero_onnx(width: int) -> bytes:
    """A valid ONNX model that scores 0.0 for an all-zeros row and NaN whenever its first
    input (the amount) is above 0: sigmoid(log(-amount)). A smoke test on zeros passes it."""
    from onnx import TensorProto, helper

    floats, ints = TensorProto.FLOAT, TensorProto.INT64
    const = [
        helper.make_node("Constant", [], [name], value=helper.make_tensor(name, kind, [n], v))
        for name, kind, n, v in (
            ("start", ints, 1, [0]), ("end", ints, 1, [1]), ("axis", ints, 1, [1]),
            ("one", floats, 1, [1.0]), ("half", floats, 1, [0.5]),
        )
    ]  # fmt: skip
    nodes = [
        *const,
        helper.make_node("Slice", ["input", "start", "end", "axis"], ["amount"]),
        helper.make_node("Neg", ["amount"], ["negated"]),
        helper.make_node("Log", ["negated"], ["logged"]),
        helper.make_node("Sigmoid", ["logged"], ["p"]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
        helper.make_node("Greater", ["p", "half"], ["flag"]),
        helper.make_node("Cast", ["flag"], ["flag64"], to=ints),
        helper.make_node("Squeeze", ["flag64", "axis"], ["label"]),
    ]
    graph = helper.make_graph(
        nodes, "nan_above_zero",
        [helper.make_tensor_value_info("input", floats, [None, width])],
        [helper.make_tensor_value_info("label", ints, [None]),
         helper.make_tensor_value_info("probabilities", floats, [None, 2])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    return model.SerializeToString()


def publish_nan_model(registry: Registry, minute: int, with_proof: bool = True) -> tuple[str, str]:
    """A bundle whose model.onnx answers NaN for every real payment (see above), with or
    without the proof rows that expose it."""
    booster = small_booster(9)
    rows = np.abs(np.random.default_rng(9).normal(size=(32, len(FEATURE_NAMES)))) + 1.0
    content = BundleContent(
        model_json=bytes(booster.save_raw("json")),
        model_onnx=nan_above_zero_onnx(len(FEATURE_NAMES)),
        threshold=0.5,
        metrics={"pr_auc": 0.8},
        data_fingerprint="test-nan",
        code_version="test",
        mlflow_run_id=f"runnan{minute:02d}broken",
        mlflow_model_version=None,
        lineage={"test": True},
        card_fields={},
        proof={"full": proof_of(booster, rows)} if with_proof else None,
    )
    return publish(registry, content, now=dt.datetime(2026, 1, 1, 12, minute, tzinfo=dt.UTC))

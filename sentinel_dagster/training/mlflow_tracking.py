"""MLflow with its SQLite store under SENTINEL_HOME: runs, the model registry and aliases.

A run records what an MLflow user looks for, so that the UI answers "where does this model
come from and what does the service run" without the Dagster UI or the bundle at hand:

- a readable name and tags linking the Dagster run, the git commit, the data fingerprint
  and, once published, the bundle version;
- the training, validation and holdout rows as MLflow datasets (schema, profile and digest,
  not the data itself);
- the XGBoost model, registered as `sentinel-stream-fraud`, with a signature (the feature
  names) and an input example; beside it, in the same run, the compiled ONNX model the
  service runs (byte for byte the bundle's `model.onnx`), which the run's description, its
  tags and the registered version's tags name.

The experiment is tagged as classic ML, or MLflow 3's UI may open it as a GenAI one.
"""

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_RUN_NOTE

from sentinel_dagster.core import git
from sentinel_dagster.training.training_data import TrainingSet, content_digest
from serving.bundle import profile_files
from serving.profiles import FULL

if TYPE_CHECKING:  # training's imports (XGBoost, ONNX) stay out of `sentinel rollback`'s
    from sentinel_dagster.training.bundle_models import CompiledModel

EXPERIMENT = "sentinel_stream_classifier"  # the seed's experiment name
REGISTERED_MODEL = "sentinel-stream-fraud"
XGBOOST_MODEL = "model"  # the registered one, as before
ONNX_MODEL = "onnx_model"  # what the service runs

# MLflow 3's UI picks the experiment's page (runs and models, or GenAI traces) from this tag.
# mlflow (3.17) has no Python constant for it: the key and values are those of its UI
# (ExperimentKind in mlflow/server/js) and of mlflow/demo/generators/traces.py.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CLASSIC_ML = "custom_model_development"

DAGSTER_RUN_TAG = "dagster.run_id"
DATA_FINGERPRINT_TAG = "data.fingerprint"
BUNDLE_VERSION_TAG = "bundle.version"
# On the run and its registered version: the ONNX model's URI, the bundle file it is
# published as, and its sha256 (the bundle manifest's for that file).
SERVED_MODEL_TAG = "serving.model"
SERVED_FILE_TAG = "serving.bundle_file"
SERVED_SHA256_TAG = "serving.onnx_sha256"

EXAMPLE_ROWS = 5


def tracking_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"


def _inferred_kind(value: str) -> bool:
    """A kind MLflow's UI stored by itself when it first opened an untagged experiment
    (`..._inferred`, or `no_inferred_type` for one without runs): a guess, not a choice."""
    return value.endswith("_inferred") or value == "no_inferred_type"


def use_local_store(home: Path) -> str:
    """Point MLflow at SENTINEL_HOME and return the experiment id (created on first use).

    The experiment is tagged as classic ML when it is created, and when it exists untagged
    or with a kind the UI guessed (stores made before the tag); a kind somebody chose in the
    UI is left as it is."""
    (home / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(home))
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        artifacts = (home / "mlflow" / "artifacts").as_uri()
        tags = {EXPERIMENT_KIND_TAG: CLASSIC_ML}
        return str(mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts, tags=tags))
    kind = experiment.tags.get(EXPERIMENT_KIND_TAG)
    if kind is None or _inferred_kind(kind):
        MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, CLASSIC_ML)
    return str(experiment.experiment_id)


def run_tags(data_fingerprint: str, dagster_run_id: str | None = None) -> dict[str, str]:
    """What links a training run to its Dagster run, its code and its data. The commit goes
    in MLflow's own git tag, which its UI shows; MLflow sets that tag by itself only from the
    launching script's folder (the `sentinel` or `dagster` executable's), not this code's."""
    tags = {DATA_FINGERPRINT_TAG: data_fingerprint}
    if dagster_run_id is not None:
        tags[DAGSTER_RUN_TAG] = dagster_run_id
    commit = git.commit()
    if commit is not None:
        tags[MLFLOW_GIT_COMMIT] = commit
    return tags


@contextmanager
def training_run(home: Path, run_name: str, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in the local store's experiment, named and tagged."""
    experiment = use_local_store(home)
    with mlflow.start_run(experiment_id=experiment, run_name=run_name, tags=tags) as run:
        yield run


def _optional_where_null(schema: Schema, frame: pd.DataFrame) -> Schema:
    """`schema` (inferred from a few rows of `frame`) with a column optional exactly when it
    holds a null in any row. MLflow's own inference tests every value in Python: about
    30 s on a million training rows, against a vectorized pass here."""
    nullable = frame.isna().any()
    columns = [c for c in schema.inputs if isinstance(c, ColSpec)]  # a frame's: all of them
    return Schema(
        [ColSpec(c.type, c.name, required=not bool(nullable[str(c.name)])) for c in columns]
    )


def frame_schema(frame: pd.DataFrame) -> Schema:
    """MLflow's schema of `frame`: column types from a few rows, nullability from all."""
    with warnings.catch_warnings():
        # The hint that integer columns cannot hold missing values: `required` is set from
        # every row, so a label column's int type is what the data has.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        sample = infer_signature(frame.head(100)).inputs
    return _optional_where_null(sample, frame)


class _Dataset(PandasDataset):
    """A PandasDataset whose schema is given (frame_schema), not inferred cell by cell."""

    def __init__(
        self, frame: pd.DataFrame, source: str, target: str, name: str, schema: Schema
    ) -> None:
        with warnings.catch_warnings():
            # This MLflow registers its local-file source for the "" and "file" schemes
            # alike, and warns that a path matches both: they are the same class of source.
            warnings.filterwarnings("ignore", message="The specified dataset source can be")
            resolved = resolve_dataset_source(source)
        super().__init__(frame, resolved, targets=target, name=name, digest=content_digest(frame))
        self._given_schema = schema

    @property
    def schema(self) -> Schema:
        return self._given_schema


def log_split(data: TrainingSet, columns: list[str], target: str, name: str, source: str) -> None:
    """The split's train, validation and holdout rows (the model's columns and `target`, the
    labels it was taught or judged on) as datasets of the active run, with the contexts
    MLflow's UI shows: training, validation, evaluation. Only schema, row counts and a
    digest are stored; `source` says where the data itself is."""
    for context, period in (
        ("training", data.train),
        ("validation", data.validation),
        ("evaluation", data.holdout),
    ):
        frame = period.frame[[*columns, target]]
        dataset = _Dataset(frame, source, target, f"{name}.{period.name}", frame_schema(frame))
        mlflow.log_input(dataset, context=context)


def _onnx_signature(onnx_bytes: bytes, example: np.ndarray) -> ModelSignature:
    """The compiled model's own interface: one float32 tensor, the features in the model's
    order, in; `label` and `probabilities` (column 1: fraud) out."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    outputs = session.run(None, {model_input.name: example})
    named = {o.name: v for o, v in zip(session.get_outputs(), outputs, strict=True)}
    return infer_signature(example, named)


def log_models(model: "CompiledModel", train: pd.DataFrame) -> str:
    """Into the active run: the XGBoost model, registered, and the ONNX model the service
    runs, each with a signature and an input example from `train` (rows with the model's
    feature columns). Returns the registered model version."""
    columns = list(model.profile.features)
    features = train[columns]
    # float32: what training gives XGBoost and what the service gives ONNX, whatever the
    # table's own column types (a precomputed table's counts may be integers).
    example = features.head(EXAMPLE_ROWS).astype(np.float32)
    matrix = example.to_numpy()
    booster = model.trained.booster
    inferred = infer_signature(example, booster.inplace_predict(matrix).astype(np.float64))
    signature = ModelSignature(
        inputs=_optional_where_null(inferred.inputs, features), outputs=inferred.outputs
    )
    logged = mlflow.xgboost.log_model(
        booster,
        name=XGBOOST_MODEL,
        registered_model_name=REGISTERED_MODEL,
        pip_requirements=["xgboost-cpu"],
        signature=signature,
        input_example=example,
    )
    import onnx

    served = mlflow.onnx.log_model(
        onnx.load_from_string(model.onnx),
        name=ONNX_MODEL,
        signature=_onnx_signature(model.onnx, matrix),
        input_example=matrix,
        pip_requirements=["onnx", "onnxruntime"],
        onnx_execution_providers=["CPUExecutionProvider"],
        save_as_external_data=False,  # one model.onnx, the same bytes as the bundle's
        metadata={"feature_names": columns},
    )
    sha256 = hashlib.sha256(model.onnx).hexdigest()
    version = str(logged.registered_model_version)
    bundle_file = (
        "model.onnx" if model.profile.name == FULL else profile_files(model.profile.name)[1]
    )
    served_tags = {
        SERVED_MODEL_TAG: served.model_uri,
        SERVED_FILE_TAG: bundle_file,
        SERVED_SHA256_TAG: sha256,
    }
    mlflow.set_tags(
        {
            **served_tags,
            MLFLOW_RUN_NOTE: (
                f"The service runs `{ONNX_MODEL}`: the ONNX compilation of `{XGBOOST_MODEL}` "
                f"(registered as {REGISTERED_MODEL} version {version}), proven equal to it "
                f"within 1e-5, published as the bundle's `{bundle_file}` (sha256 {sha256}). "
                "Its input is one float32 tensor of the features in this order: "
                f"{', '.join(columns)}."
            ),
        }
    )
    client = MlflowClient()
    for key, value in served_tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, version, key, value)
    return version


def record_bundle(run_id: str, model_version: str | None, bundle_version: str) -> None:
    """Tag the run, and its registered version, with the bundle they were published as."""
    client = MlflowClient()
    client.set_tag(run_id, BUNDLE_VERSION_TAG, bundle_version)
    if model_version is not None:
        client.set_model_version_tag(
            REGISTERED_MODEL, model_version, BUNDLE_VERSION_TAG, bundle_version
        )


def set_alias(alias: str, version: str) -> None:
    """Mirror a registry pointer as an alias on the registered model version."""
    MlflowClient().set_registered_model_alias(REGISTERED_MODEL, alias, version)


def delete_alias(alias: str) -> None:
    """Remove the alias if it is set (nothing to do when the model was never registered)."""
    client = MlflowClient()
    try:
        aliases = client.get_registered_model(REGISTERED_MODEL).aliases or {}
    except MlflowException:
        return
    if alias in aliases:
        client.delete_registered_model_alias(REGISTERED_MODEL, alias)

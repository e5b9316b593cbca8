"""The pipeline: plain modules by stage, wrapped by a thin Dagster layer (`defs/`)."""

import warnings

from sentinel_dagster.core import pyspark_on_demand

# GX and MLflow would import PySpark, when installed, in every process (seconds each).
pyspark_on_demand.install()

# PySpark warns at import that it does not fully support pandas 3. The Spark engine hands
# pandas only what it converts from Arrow itself (features/spark_replay.py), so the warning
# would only alarm every `sentinel features --engine spark`.
warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)

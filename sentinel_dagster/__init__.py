"""The pipeline: plain modules by stage, wrapped by a thin Dagster layer (`defs/`)."""

import warnings

# PySpark (the Spark feature engine) warns at import that it does not fully support
# pandas 3, and Great Expectations imports it whenever it is installed. The engine hands
# pandas only what it converts from Arrow itself (features/spark_replay.py), so the warning
# would only alarm every `sentinel` command.
warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)

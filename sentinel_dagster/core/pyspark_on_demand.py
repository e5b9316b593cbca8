"""PySpark is imported only where the Spark feature engine asks for it.

Great Expectations and MLflow probe for PySpark when they are imported and, where it is
installed (the `spark` extra), import it: GX all of it, Spark Connect included. Measured:
1.5 to 3 s more per GX import and 0.6 s per MLflow import, in every process of the pipeline
(Dagster runs each step in its own process). Neither is ever given Spark data here, so until
`allow()` is called (by `features/spark_replay.py`), an import of PySpark fails as if it were
not installed. A process that had PySpark before this package was imported (a Spark worker,
a user's notebook) keeps it: nothing is refused once PySpark is loaded.

Hand-written: an import hook is the only way to keep a library's import-time probe from
loading an installed package (`sys.modules[name] = None` would also refuse it to us later).
"""

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType


class _OnDemand(importlib.abc.MetaPathFinder):
    allowed = False

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        refused = not self.allowed and "pyspark" not in sys.modules
        if refused and (name == "pyspark" or name.startswith("pyspark.")):
            raise ModuleNotFoundError(
                f"No module named {name!r} until the Spark engine loads it "
                "(sentinel_dagster/core/pyspark_on_demand.py)",
                name=name,
            )
        return None  # the usual finders find it


_finder = _OnDemand()


def install() -> None:
    """Refuse PySpark to importers until `allow()` (once per process)."""
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def allow() -> None:
    """Let PySpark be imported from now on (the Spark engine is starting)."""
    _finder.allowed = True

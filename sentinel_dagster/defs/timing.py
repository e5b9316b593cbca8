"""Each asset's time, on its materialization: `seconds` in the metadata Dagster records.

The run's step timeline shows durations too, but only per run; as metadata the time is on
the asset's page beside its other figures, and Dagster plots it across materializations.
"""

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

F = TypeVar("F", bound=Callable[..., Any])


def timed(compute: F) -> F:
    """Wrap an asset's function (below `@dg.asset`): its wall time joins its metadata."""

    @functools.wraps(compute)  # Dagster reads the parameters through `__wrapped__`
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = compute(*args, **kwargs)
        seconds = {"seconds": round(time.perf_counter() - started, 2)}
        if isinstance(result, dg.Output):
            return dg.Output(
                result.value,
                output_name=result.output_name,
                metadata={**result.metadata, **seconds},
                data_version=result.data_version,
                tags=result.tags,
            )
        if isinstance(result, dg.MaterializeResult):
            return result._replace(metadata={**(result.metadata or {}), **seconds})
        return dg.Output(result, metadata=seconds)

    return run  # type: ignore[return-value]

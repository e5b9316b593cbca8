"""The partitioned replay (`partitioned_replay.py`) on Apache Spark: logs too big for one process.

Spark moves and sorts the rows; the features are computed in Spark's Python workers by the
same functions the one-process plan uses (`shared_id_tables`, `replay_side`), so the table
is the one `feature_replay.replay` makes, bit for bit (tests/sentinel_dagster/
test_partitioned_replay.py). Data crosses between the JVM and Python as Arrow batches
(`mapInArrow`): no Spark-to-pandas conversion touches timestamps or nulls.

The jobs, each named in the Spark UI:
1. check: the replay's invariants, in one aggregation (the messages `replay` gives).
2. label clocks: each fraud label's log clock, the latest event time before it. Events are
   bucketed by hour: the hours' maxima are a small table on the driver, and a window within
   the label's hour finds the rest. Exact, and no step sees more than an hour of the log.
3. repeated ids: the rows of transaction ids that occur more than once, partitioned by id,
   through `shared_id_tables`.
4. features: the log with those columns partitioned by card, each partition through
   `replay_side`, which adds the card side's features to its rows; those rows partitioned
   by merchant, where the merchant side adds its own; sorted, written as Parquet. Chaining
   the sides joins them on the row without a join: measured on 1M events, the two
   sort-merge joins and their shuffles cost more than the card side's replay.

Rows are numbered in the input's order (`monotonically_increasing_id` follows the files'
order), which breaks ties of equal (event_time, transaction_id) as the one-process replay
does. Event times are read at Spark's microsecond precision.
"""

import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from sentinel_dagster.core import pyspark_on_demand
from sentinel_dagster.data.dataset import check_schema, normalize
from sentinel_dagster.features.feature_replay import KEY_COLUMNS, LABEL_COLUMNS
from sentinel_dagster.features.partitioned_replay import (
    LABEL_CLOCK,
    ROW,
    SHARED_SCHEMA,
    SIDES,
    computed,
    replay_side,
    shared_id_tables,
    side_features,
)
from serving.events import ALL_COLUMNS
from serving.feature_engine import EngineConfig, label_before_event

HOUR_US = 3_600_000_000
US = 1e6
BATCH_ROWS = 50_000  # per Arrow batch handed back to the JVM: bounded, whatever the partition


class SparkUnavailable(RuntimeError):
    """PySpark is not installed, or Spark could not start; the message says which."""


@dataclass
class SparkReplayResult:
    rows: int
    columns: int
    seconds: float  # the replay's jobs, from the session being ready to the table written
    startup_seconds: float
    master: str
    partitions: int
    app_id: str
    ui_url: str | None
    # Per partition of each side: (side, partition, rows, seconds, the worker's peak RSS in
    # KiB); a partition Spark computed twice (a retry, a re-planned join) is counted once.
    tasks: list[tuple[str, int, int, float, int]] = field(default_factory=list)
    driver_peak_rss_mib: float = 0.0
    jvm_peak_rss_mib: float = 0.0

    def side_stats(self, side: str) -> dict[str, float]:
        mine = [t for t in self.tasks if t[0] == side]
        if not mine:
            return {}
        rows = [t[2] for t in mine]
        return {
            "partitions": len(mine),
            "largest_partition_rows": max(rows),
            "median_partition_rows": float(np.median(rows)),
            "slowest_partition_seconds": round(max(t[3] for t in mine), 2),
            "us_per_event": round(1e6 * sum(t[3] for t in mine) / max(sum(rows), 1), 2),
        }

    @property
    def worker_peak_rss_mib(self) -> float:
        return max((t[4] for t in self.tasks), default=0) / 1024

    def metadata(self) -> dict[str, Any]:
        """What a run records: engine, partitions, time, memory, skew."""
        return {
            "engine": "spark",
            "spark_master": self.master,
            "spark_app_id": self.app_id,
            "partitions": self.partitions,
            "seconds": round(self.seconds, 2),
            "spark_startup_seconds": round(self.startup_seconds, 2),
            "events_per_second": round(self.rows / max(self.seconds, 1e-9)),
            "driver_peak_rss_mib": round(self.driver_peak_rss_mib),
            "jvm_peak_rss_mib": round(self.jvm_peak_rss_mib),
            "worker_peak_rss_mib": round(self.worker_peak_rss_mib),
            **{f"{side}_{k}": v for side in SIDES for k, v in self.side_stats(side).items()},
        }


def spark_session(master: str, conf: Mapping[str, str] | None = None) -> Any:
    """A session on `master` (`local[*]`, `spark://host:7077`, `yarn`, `k8s://...`).

    A local master's workers run this interpreter, so they import this project as the driver
    does, and it listens on loopback only. A cluster's workers need the project installed
    (README, "Switching the feature engine")."""
    pyspark_on_demand.allow()
    try:
        from pyspark.sql import SparkSession
    except ModuleNotFoundError:
        raise SparkUnavailable(
            "the spark engine needs PySpark: pip install 'sentinel-stream[spark]'"
        ) from None
    builder = (
        SparkSession.builder.master(master)
        .appName("sentinel-features")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH_ROWS))
        # Timestamps written as the contract has them (INT96, Spark's default, reads back
        # as naive nanoseconds).
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    )
    if master.startswith("local"):
        builder = (
            builder.config("spark.pyspark.python", sys.executable)
            .config("spark.pyspark.driver.python", sys.executable)
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
        )
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate()
    except Exception as exc:  # Java missing, a master that does not answer, a bad setting
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparkUnavailable(f"Spark did not start on {master}: {first}") from None


def peak_rss_kib() -> int:
    """This process's peak RSS since it started. VmHWM, not `ru_maxrss`: Linux keeps
    `ru_maxrss` across exec, so a child would report its parent's peak at the fork."""
    try:
        return _status_kib(Path("/proc/self/status").read_text(), "VmHWM")
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _status_kib(status: str, field: str) -> int:
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise ValueError(field)


def _jvm_peak_rss_mib(spark: Any) -> float:
    """The driver JVM's peak RSS (VmHWM); 0 where it is not a child of this process."""
    proc: Any = getattr(spark.sparkContext._gateway, "proc", None)
    try:
        return _status_kib(Path(f"/proc/{proc.pid}/status").read_text(), "VmHWM") / 1024
    except (AttributeError, OSError, ValueError):
        return 0.0


def _table(batches: Iterator[pa.RecordBatch]) -> pa.Table | None:
    """A partition's batches as one table (None: the partition is empty)."""
    tables = [pa.Table.from_batches([b]) for b in batches if b.num_rows]
    return pa.concat_tables(tables) if tables else None


def _frame(table: pa.Table) -> pd.DataFrame:
    """The rows as the engine reads them: the contract's dtypes (UTC timestamps)."""
    return normalize(table.to_pandas())


def _arrow(frame: pd.DataFrame) -> Iterator[pa.RecordBatch]:
    yield from pa.Table.from_pandas(frame, preserve_index=False).to_batches(BATCH_ROWS)


def read_log(spark: Any, path: str) -> Any:
    """The log as Spark reads it; ValueError for what Spark cannot read as the contract."""
    from pyspark.errors import AnalysisException

    try:
        return spark.read.parquet(path)
    except AnalysisException as exc:
        if "TIMESTAMP(NANOS" in str(exc):
            raise ValueError(
                "timestamps: nanosecond timestamps, which Spark does not read; write the file "
                "with microsecond ones (pandas: .dt.as_unit('us'); pyarrow: "
                "coerce_timestamps='us'), as `sentinel simulate` does"
            ) from None
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"cannot read {path}: {first}") from None


def check_columns(df: Any) -> None:
    """The schema check `load_transactions` makes, on the Spark schema (SchemaError)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    check_schema(to_arrow_schema(df.schema, timezone="UTC").empty_table().to_pandas())


def check_rows(df: Any) -> None:
    """`check_replayable`'s checks and labels stamped before their events, in one job;
    ValueError with the message `replay` gives."""
    from pyspark.sql import functions as F

    checks = [F.sum(F.col(c).isNull().cast("long")).alias(c) for c in (*KEY_COLUMNS, "amount")]
    amount = F.col("amount")
    bad_amount = F.isnan(amount) | (amount < 0) | (amount == float("inf"))
    checks.append(F.sum(bad_amount.cast("long")).alias("bad_amount"))
    early = F.col("label_time") < F.col("event_time") if "label_time" in df.columns else None
    if early is not None:
        checks.append(F.sum(early.cast("long")).alias("early_labels"))
    found = df.agg(*checks).first().asDict()
    for column in (*KEY_COLUMNS, "amount"):
        if found[column]:
            raise ValueError(f"{column}: {found[column]} null values")
    if found["bad_amount"]:
        raise ValueError("amount: values must be finite and >= 0")
    if early is not None and found["early_labels"]:
        row = df.filter(early).orderBy("label_time").select("label_time", "event_time").first()
        raise ValueError(label_before_event(row.label_time.timestamp(), row.event_time.timestamp()))


def label_clocks(df: Any) -> Any:
    """(ROW, LABEL_CLOCK) for each fraud label: the latest event time strictly before it
    (-inf when none), in epoch seconds as the engine has them."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    us = F.unix_micros(F.col("event_time"))
    events = df.select(F.lit(None).cast("long").alias(ROW), us.alias("at"), F.lit(1).alias("event"))
    fraud = F.col("label_time").isNotNull() & (F.col("is_fraud").cast("double") != 0)
    labels = df.filter(fraud).select(
        ROW, F.unix_micros(F.col("label_time")).alias("at"), F.lit(0).alias("event")
    )
    hour = F.floor(F.col("at") / HOUR_US).alias("hour")
    # The hours before a label's own: each hour's latest event (a table of the log's hours).
    latest = events.groupBy(hour).agg(F.max("at").alias("latest")).orderBy("hour").collect()
    label_hours = [r.hour for r in labels.select(hour).distinct().collect()]
    event_hours = np.array([r.hour for r in latest], dtype="int64")
    so_far = np.maximum.accumulate(np.array([r.latest for r in latest], dtype="int64"))
    earlier = []
    for h in label_hours:
        k = int(np.searchsorted(event_hours, h, side="left"))  # hours strictly before h
        earlier.append((int(h), int(so_far[k - 1]) if k else None))
    earlier_hours = df.sparkSession.createDataFrame(earlier, "hour long, earlier long")
    # Within the label's hour: labels sort before events at the same time (a label at an
    # event's time is applied before it), so the rows before a label are earlier events.
    within = (
        Window.partitionBy("hour").orderBy("at", "event").rowsBetween(Window.unboundedPreceding, -1)
    )
    both = events.unionByName(labels).withColumn("hour", hour)
    local = both.withColumn("local", F.max(F.when(F.col("event") == 1, F.col("at"))).over(within))
    found = local.filter(F.col("event") == 0).join(F.broadcast(earlier_hours), "hour", "left")
    clock_us = F.greatest(F.col("local"), F.col("earlier"))  # nulls ignored
    clock = F.coalesce(clock_us / US, F.lit(float("-inf")))
    return found.select(ROW, clock.alias(LABEL_CLOCK))


def _shared_tables_task(config: EngineConfig) -> Callable[[Iterator[pa.RecordBatch]], Any]:
    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = _table(batches)
        if rows is not None:
            yield from _arrow(shared_id_tables(_frame(rows), config))

    return task


def _side_task(config: EngineConfig, side: str, stats: Any) -> Callable[..., Any]:
    from pyspark import TaskContext

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = _table(batches)
        if rows is None:
            return
        started = time.perf_counter()
        order, features = replay_side(_frame(rows), config, side)
        out = rows.take(pa.array(order))  # the rows as they came, in log order
        for name in features.columns:
            out = out.append_column(name, pa.array(features[name].to_numpy()))
        seconds = time.perf_counter() - started
        context: Any = TaskContext.get()  # set in every Spark task
        partition = context.partitionId()
        stats.add([(side, partition, len(out), seconds, peak_rss_kib())])
        yield from out.to_batches(max_chunksize=BATCH_ROWS)

    return task


def _spark_type(dtype: str) -> str:
    return {"int64": "long", "bool": "boolean", "object": "string", "float64": "double"}[dtype]


def spark_replay(
    in_path: str | Path,
    out_path: str | Path,
    config: EngineConfig | None = None,
    *,
    master: str = "local[*]",
    partitions: int = 0,
    conf: Mapping[str, str] | None = None,
    on_start: Callable[[Any], None] | None = None,
    session: Any = None,
) -> SparkReplayResult:
    """Replay the log at `in_path` (Parquet, read by Spark: a file or a directory, on any
    filesystem Spark reads) into the feature table at `out_path` (a Parquet directory,
    rows in (event_time, transaction_id) order). `partitions` per side (0: twice the
    cluster's cores). `session`, or else the process's active one (a notebook's), is used
    and left running (`master` and `conf` are then the session's own); otherwise one is
    started on `master` and stopped at the end."""
    config = config or EngineConfig()
    started = time.perf_counter()
    running = session or _active_session()
    spark = running or spark_session(master, conf)
    startup = time.perf_counter() - started
    try:
        if on_start is not None:
            on_start(spark)
        return _run(spark, str(in_path), str(out_path), config, partitions, startup)
    finally:
        if running is None:
            spark.stop()


def _active_session() -> Any:
    """The process's active Spark session, if any (None also without PySpark:
    `spark_session` then says why)."""
    pyspark_on_demand.allow()
    try:
        from pyspark.sql import SparkSession
    except ModuleNotFoundError:
        return None
    return SparkSession.getActiveSession()


def _list_accumulator(sc: Any) -> Any:
    """An accumulator each task appends its figures to (PySpark is imported only here and
    in functions: without the `spark` extra, this module still imports)."""
    from pyspark.accumulators import AccumulatorParam

    class Appended(AccumulatorParam):
        def zero(self, value: list) -> list:
            return []

        def addInPlace(self, a: list, b: list) -> list:
            a.extend(b)
            return a

    return sc.accumulator([], Appended())


def _run(
    spark: Any, in_path: str, out_path: str, config: EngineConfig, partitions: int, startup: float
) -> SparkReplayResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    sc = spark.sparkContext
    started = time.perf_counter()
    partitions = partitions or 2 * sc.defaultParallelism
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    sc.setJobDescription("sentinel features: read and check the log")
    df = read_log(spark, in_path)
    check_columns(df)
    check_rows(df)
    df = df.withColumn(ROW, F.monotonically_increasing_id())
    stats = _list_accumulator(sc)
    # Kept on the executors' disks: the sort samples its input before sorting it, and would
    # otherwise replay the merchant side twice.
    replayed = _replayed(_planned(df, config, partitions), config, partitions, stats).persist(
        StorageLevel.DISK_ONLY
    )
    labels = [c for c in LABEL_COLUMNS if c in df.columns]
    table = replayed.orderBy("event_time", "transaction_id", ROW).select(
        *KEY_COLUMNS, *(F.col(computed(n)).alias(n) for n in config.features.names), *labels
    )
    sc.setJobDescription("sentinel features: replay by card, then by merchant; write")
    table.write.mode("overwrite").parquet(out_path)
    replayed.unpersist()
    tasks = list({(t[0], t[1]): t for t in stats.value}.values())
    return SparkReplayResult(
        rows=sum(t[2] for t in tasks if t[0] == "card"),
        columns=len(table.columns),
        seconds=time.perf_counter() - started,
        startup_seconds=startup,
        master=sc.master,
        partitions=partitions,
        app_id=sc.applicationId,
        ui_url=sc.uiWebUrl,
        tasks=tasks,
        driver_peak_rss_mib=peak_rss_kib() / 1024,
        jvm_peak_rss_mib=_jvm_peak_rss_mib(spark),
    )


def _planned(df: Any, config: EngineConfig, partitions: int) -> Any:
    """The log's rows (ROW and the contract's columns) with the plan's columns: each fraud
    label's clock, and what the log's id tables hold before each row of a repeated id."""
    from pyspark.sql import functions as F

    sc = df.sparkSession.sparkContext
    planned = df.select(ROW, *[c for c in ALL_COLUMNS if c in df.columns])
    if "label_time" in df.columns and "is_fraud" in df.columns:
        sc.setJobDescription("sentinel features: each fraud label's clock")
        planned = planned.join(label_clocks(df), ROW, "left")
    else:
        planned = planned.withColumn(LABEL_CLOCK, F.lit(None).cast("double"))
    sc.setJobDescription("sentinel features: transaction ids shared by several rows")
    repeated = df.groupBy("transaction_id").count().filter(F.col("count") > 1)
    shared_rows = planned.join(repeated.select("transaction_id"), "transaction_id", "left_semi")
    schema = ", ".join(f"{name} {_spark_type(dtype)}" for name, dtype in SHARED_SCHEMA.items())
    tables = shared_rows.repartition(partitions, "transaction_id").mapInArrow(
        _shared_tables_task(config), schema
    )
    return planned.join(tables, ROW, "left")


def _replayed(planned: Any, config: EngineConfig, partitions: int, stats: Any) -> Any:
    """The rows with the card side's features, then the merchant side's (`computed` names)."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    table = planned
    for side, column in SIDES.items():
        names = side_features(config.features, side)
        added = [StructField(computed(n), DoubleType()) for n in names]
        table = table.repartition(partitions, column).mapInArrow(
            _side_task(config, side, stats), StructType([*table.schema.fields, *added])
        )
    return table


def spark_replay_frame(
    frame: pd.DataFrame, config: EngineConfig, scratch: Path, **spark: Any
) -> tuple[pd.DataFrame, SparkReplayResult]:
    """`spark_replay` of a frame already in memory (the `transactions` asset), through
    Parquet under `scratch`: the table `replay(frame, config)` gives, and the run."""
    from sentinel_dagster.data.dataset import write_parquet_frame

    scratch.mkdir(parents=True, exist_ok=True)
    log, out = scratch / "log.parquet", scratch / "features"
    try:
        write_parquet_frame(frame, log)
        result = spark_replay(log, out, config, **spark)
        return pd.read_parquet(out), result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

"""The `sentinel` command line: the seed users' habits, running the same code as the assets.

User mistakes (a missing file, a bad option) end with a one-line message and a non-zero
exit code, never a traceback.
"""

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sentinel_dagster.core import paths
from sentinel_dagster.simulation.simulation_params import SimulationParams

if TYPE_CHECKING:
    from rich.progress import Progress

# --help and argument errors answer at once: nothing heavy is imported before a command's
# body runs (rich, the data and ML libraries; typer < 0.29, which converts values without
# pydantic: pyproject.toml).

app = typer.Typer(
    help="Sentinel-Stream: real-time card-fraud scoring, orchestrated by Dagster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click errors: "Error: Invalid value for '--days'"
    add_completion=False,
)

EXIT_INVALID = 1  # the data (or model) was judged and failed
EXIT_UNUSABLE = 2  # the input could not be read at all, or the arguments are wrong


# Bell, backspace, vertical tab, form feed, carriage return: data must not rewrite the line.
_LINE_REWRITING = dict.fromkeys((7, 8, 11, 12, 13))


def say(text: str, err: bool = False) -> None:
    """Print literally: data (e.g. "[amount]") is never read as markup, lines never wrap.

    Plain print, not rich: importing rich costs about 0.15 s of every command's startup,
    --help and argument errors included."""
    print(text.translate(_LINE_REWRITING), file=sys.stderr if err else sys.stdout, flush=True)


def fail(message: str, code: int) -> typer.Exit:
    say(f"error: {message}", err=True)
    return typer.Exit(code)


def progress_bar(label: str, count: str | None = None) -> "Progress":
    """A transient bar on stderr: label, bar, [count], time elapsed. rich is imported here,
    by the commands that show one, not at startup."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn

    columns: list[ProgressColumn] = [TextColumn(label), BarColumn()]
    if count is not None:
        columns.append(TextColumn(count))
    return Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True), transient=True)


def require_file(path: Path | None) -> None:
    """A missing input file is said at once, before the data libraries load (seconds)."""
    problem = None if path is None else paths.missing_file(path)
    if problem is not None:
        raise fail(problem, EXIT_UNUSABLE)


_DEFAULTS = SimulationParams()


class FeatureEngineName(StrEnum):
    IN_PROCESS = "in-process"
    SPARK = "spark"


@app.command()
def simulate(
    cards: Annotated[int, typer.Option(help="Card holders to simulate.")] = _DEFAULTS.cards,
    days: Annotated[int, typer.Option(help="Days of activity.")] = _DEFAULTS.days,
    seed: Annotated[int, typer.Option(help="Random seed: same arguments, same bytes.")] = (
        _DEFAULTS.seed
    ),
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Parquet file to write [default: $SENTINEL_HOME/data/...]."),
    ] = None,
    fraud_rate: Annotated[float, typer.Option(help="Share of fraud events.")] = (
        _DEFAULTS.fraud_rate
    ),
    start: Annotated[str, typer.Option(help="First UTC day, YYYY-MM-DD.")] = _DEFAULTS.start,
    label_delay_days: Annotated[
        float | None,
        typer.Option(
            help="Every chargeback arrives exactly this many days after its payment "
            "[default: a realistic spread, median ~6 days, up to 90]."
        ),
    ] = None,
    emerging_from: Annotated[
        str | None,
        typer.Option(
            help="From this UTC day (YYYY-MM-DD) the emerging scenario, ATM cash-outs with "
            "cloned cards, runs too [default: never]."
        ),
    ] = None,
) -> None:
    """Simulate a labelled transaction stream: four fraud scenarios, and a fifth emerging
    one from `--emerging-from` on."""
    from sentinel_dagster.simulation.simulator import simulate_to_parquet

    params = SimulationParams(
        cards, days, seed, fraud_rate, start, label_delay_days=label_delay_days,
        emerging_from=emerging_from,
    )  # fmt: skip
    try:
        params.validate()
    except ValueError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    target = out_path or paths.default_simulation_path(paths.sentinel_home())
    try:  # a failure is said once the bar is gone
        with progress_bar("{task.description}") as bar:
            task = bar.add_task("simulating", total=1.0)
            summary = simulate_to_parquet(
                params,
                target,
                lambda done, stage: bar.update(task, completed=done, description=stage),
            )
    except OSError as exc:
        raise fail(f"cannot write {target}: {exc.strerror or exc}", EXIT_INVALID) from None
    say(f"wrote {target}: {summary.one_line()}")


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="Parquet file of transactions.")],
    policy: Annotated[
        Path | None, typer.Option(help="Policy YAML [default: mlops/promotion_policy.yaml].")
    ] = None,
    data_docs: Annotated[
        bool, typer.Option(help="Build GX Data Docs under $SENTINEL_HOME/data_docs.")
    ] = True,
) -> None:
    """Validate transactions with the Great Expectations suite of the Dagster checks.

    Exit 0 when valid, 1 listing each failed expectation, 2 when the file is unreadable.
    """
    require_file(path)
    from sentinel_dagster.core.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy
    from sentinel_dagster.data.dataset import DatasetError, normalize, read_parquet, schema_problems

    try:
        rules = load_policy(policy or DEFAULT_POLICY_PATH).data
        frame = read_parquet(path)
    except (DatasetError, PolicyError) as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    # Great Expectations takes seconds to import: only once the file is known to be readable.
    from sentinel_dagster.data.validation import validate_transactions

    if not schema_problems(frame):
        frame = normalize(frame)
    docs = paths.data_docs_dir(paths.sentinel_home()) if data_docs else None
    report = validate_transactions(frame, rules, docs_dir=docs, data_asset=path.name)
    if report.success:
        say(f"valid: {report.rows:,} rows passed {len(report.outcomes)} expectations")
    else:
        _print_failures(report)
    if report.data_docs is not None:
        say(f"data docs: {report.data_docs}")
    if not report.success:
        raise typer.Exit(EXIT_INVALID)


def _print_failures(report: Any) -> None:
    """Every failed expectation of a ValidationReport, with examples, on stderr."""
    failures = report.failures
    say(
        f"invalid: {len(failures)} of {len(report.outcomes)} expectations "
        f"failed on {report.rows:,} rows",
        err=True,
    )
    for o in failures:
        column = f" ({o.column})" if o.column else ""
        say(f"  ✗ [{o.check}] {o.expectation}{column}: {o.observed}", err=True)
        for example in o.examples:
            say(f"      e.g. {example}", err=True)


@app.command()
def features(
    in_path: Annotated[
        str,
        typer.Argument(
            help="Parquet file of transactions (and labels); with --engine spark also a "
            "directory or any URI Spark reads (s3a://, hdfs://, ...)."
        ),
    ],
    out_path: Annotated[
        str,
        typer.Argument(
            help="Parquet file to write the feature table to; with --engine spark a Parquet "
            "directory."
        ),
    ],
    snapshot: Annotated[
        Path | None,
        typer.Option(help="Also save the engine's final state here, to warm-start serving."),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            help="Policy YAML whose label_maturity_days lags the label windows "
            "[default: mlops/promotion_policy.yaml]."
        ),
    ] = None,
    engine: Annotated[
        FeatureEngineName,
        typer.Option(
            help="in-process: one Python process. spark: partitioned by card and merchant on "
            "Spark; the same table, for logs one machine cannot replay.",
        ),
    ] = FeatureEngineName.IN_PROCESS,
    master: Annotated[
        str,
        typer.Option(
            help="Spark master (--engine spark): local[N], spark://host:7077, yarn, k8s://..."
        ),
    ] = "local[*]",
    partitions: Annotated[
        int,
        typer.Option(
            min=0,
            show_default=False,
            help="Partitions per side (--engine spark) [default: 2 x the cores].",
        ),
    ] = 0,
) -> None:
    """Replay events and label arrivals through the serving feature engine into a table."""
    spark = engine is FeatureEngineName.SPARK
    if not spark:
        require_file(Path(in_path))
    elif "://" not in in_path and not Path(in_path).exists():
        raise fail(f"not found: {in_path}", EXIT_UNUSABLE)
    if spark and snapshot is not None:
        raise fail(
            "--snapshot needs --engine in-process: partitions hold the state in pieces",
            EXIT_UNUSABLE,
        )
    from sentinel_dagster.core.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy
    from serving.feature_engine import EngineConfig
    from serving.features import FeatureSet

    try:
        maturity = load_policy(policy or DEFAULT_POLICY_PATH).label_maturity_days
    except PolicyError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    config = EngineConfig(features=FeatureSet(label_maturity_days=maturity))
    if spark:
        _features_on_spark(in_path, out_path, config, master, partitions)
    else:
        _features_in_process(Path(in_path), Path(out_path), config, snapshot)


def _features_in_process(in_path: Path, out_path: Path, config: Any, snapshot: Path | None) -> None:
    from sentinel_dagster.data.dataset import (
        DatasetError,
        SchemaError,
        load_transactions,
        write_parquet_frame,
    )
    from sentinel_dagster.features.feature_replay import replay

    try:
        frame = load_transactions(in_path)
    except DatasetError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    except SchemaError as exc:
        raise fail(f"{in_path}: {exc}", EXIT_INVALID) from None
    try:
        with progress_bar("replaying events", "{task.completed:,}") as bar:
            task = bar.add_task("replay", total=len(frame))
            result = replay(
                frame, config, progress=lambda done, _: bar.update(task, completed=done)
            )
    except ValueError as exc:
        raise fail(f"{in_path}: {exc}", EXIT_INVALID) from None
    try:
        write_parquet_frame(result.table, out_path)
        if snapshot is not None:
            result.engine.snapshot(snapshot)
    except OSError as exc:
        raise fail(f"cannot write: {exc}", EXIT_INVALID) from None
    rate = len(result.table) / max(result.seconds, 1e-9)
    say(
        f"wrote {out_path}: {len(result.table):,} rows x {result.table.shape[1]} columns, "
        f"{result.seconds:.1f}s ({rate:,.0f} events/s)"
    )
    if snapshot is not None:
        say(f"engine state: {snapshot}")


def _features_on_spark(
    in_path: str, out_path: str, config: Any, master: str, partitions: int
) -> None:
    from sentinel_dagster.features.spark_replay import SparkUnavailable, spark_replay

    def started(session: Any) -> None:
        ui = session.sparkContext.uiWebUrl
        say(f"Spark {session.version} on {master}" + (f": UI at {ui}" if ui else ""))

    try:
        result = spark_replay(
            in_path, out_path, config, master=master, partitions=partitions, on_start=started
        )
    except SparkUnavailable as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    except ValueError as exc:  # the data: schema, nulls, labels before their events
        raise fail(f"{in_path}: {exc}", EXIT_INVALID) from None
    say(
        f"wrote {out_path} (Parquet directory): {result.rows:,} rows x {result.columns} "
        f"columns, {result.seconds:.1f}s on Spark {result.master}, {result.partitions} "
        f"partitions per side ({result.rows / max(result.seconds, 1e-9):,.0f} events/s)"
    )


@app.command("check-promotion")
def check_promotion(
    metadata: Annotated[
        Path | None,
        typer.Option(
            help="Evaluation or bundle-manifest JSON with 'metrics' "
            "[default: $SENTINEL_HOME/candidates/latest_evaluation.json]."
        ),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="Policy YAML [default: mlops/promotion_policy.yaml].")
    ] = None,
) -> None:
    """Judge a candidate's metrics against the promotion policy (the seed's exit codes),
    beside the heuristic and the champion served from $SENTINEL_HOME/registry.

    Exit 0 when it passes, 1 listing every failed check, 2 when a file is missing or unreadable.
    """
    import json

    from sentinel_dagster.core.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy
    from sentinel_dagster.governance.promotion import decide_bundle
    from sentinel_dagster.training.bundle_models import models_of
    from serving.bundle import BundleError

    home = paths.sentinel_home()
    source = metadata or home / "candidates" / "latest_evaluation.json"
    try:
        rules = load_policy(policy or DEFAULT_POLICY_PATH)
        data = json.loads(source.read_text())
        evaluation = _bundle_evaluation(source) or data
        models = models_of(evaluation)  # the full model and each request profile's
        if not models:
            raise KeyError("metrics")
    except PolicyError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    except FileNotFoundError:
        raise fail(f"metadata file not found: {source}", EXIT_UNUSABLE) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise fail(f"{source} has no readable 'metrics' object: {exc}", EXIT_UNUSABLE) from None
    seeded = data.get("champion_metrics")  # the earlier system's metadata carried them
    if seeded:
        decision = decide_bundle(models, rules.promotion, champion={"full": seeded})
    else:
        try:
            champion = _served_champion(home, data.get("data_fingerprint"), rules)
        except BundleError as exc:
            raise fail(f"the champion bundle cannot be read: {exc}", EXIT_UNUSABLE) from None
        if champion.version is not None:
            say(f"champion {champion.version}: metrics {champion.measured}")
        decision = decide_bundle(
            models,
            rules.promotion,
            champion=champion.for_gate(),
            champion_incomparable=champion.incomparable,
        )
    for check in decision.checks:
        say(f"  {'ok ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    if not decision.passed:
        for line in decision.refusal():  # every failed check together, at the end
            say(line, err=True)
        raise typer.Exit(EXIT_INVALID)
    say("promotion gate passed")


def _served_champion(home: Path, data_fingerprint: Any, rules: Any) -> Any:
    """The champion the registry under `home` points at, scored as the lineage's gate scores
    it when the stored training set is the judged candidate's (champion_score.py)."""
    from sentinel_dagster.training.champion_score import champion_for
    from serving.features import FeatureSet
    from serving.registry import Registry

    return champion_for(
        Registry(home / "registry"),
        FeatureSet(label_maturity_days=rules.label_maturity_days),
        data_fingerprint if isinstance(data_fingerprint, str) else None,
        paths.asset_path(home, "training_set"),
    )


def _bundle_evaluation(source: Path) -> dict[str, Any] | None:
    """A bundle's manifest.json holds only the models' own metrics; its lineage.json keeps
    the whole evaluation (heuristic metrics and latency, for every profile too)."""
    import json

    lineage = source.with_name("lineage.json")
    if source.name != "manifest.json" or not lineage.is_file():
        return None
    try:
        evaluation = json.loads(lineage.read_text())["evaluation"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # judged on the manifest alone: the uplift check names what is missing
    return evaluation if isinstance(evaluation, dict) else None


@app.command()
def materialize(
    select: Annotated[
        str | None,
        typer.Option(help="Dagster asset selection, e.g. 'group:data' [default: main_job]."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Run config YAML, as in the Dagster launchpad (ops: ...: config:)."),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(help="Policy YAML for this run [default: mlops/promotion_policy.yaml]."),
    ] = None,
) -> None:
    """Materialize the lineage in process, recorded in the Dagster instance (see the UI)."""
    from sentinel_dagster.cli.asset_names import unknown_in_selection

    unknown = None if select is None else unknown_in_selection(select)
    if unknown is not None:
        raise fail(f"cannot materialize {select}: {unknown}", EXIT_UNUSABLE)
    _check_signing_key()
    from sentinel_dagster.cli.runner import MaterializeError, load_run_config, with_policy
    from sentinel_dagster.core.policy import PolicyError, load_policy

    try:
        run_config = load_run_config(config) if config else None
        if policy is not None:
            load_policy(policy)  # refuse a bad file here, not halfway through the run
            run_config = with_policy(run_config, policy)
    except (MaterializeError, PolicyError) as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    _materialize_and_report(select, run_config)


def _materialize_and_report(
    select: str | None,
    run_config: dict[str, Any] | None,
    launched_by: str = "cli",
    ui_hint: bool = True,
) -> None:
    """Run the selection (main_job by default), saying each asset and check as it is done
    and then what else the run did; fail on a failed run."""
    from sentinel_dagster.cli.runner import MaterializeError, materialize_lineage

    try:
        report = materialize_lineage(select, run_config, launched_by=launched_by, progress=say)
    except MaterializeError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    for line in report.lines(ui_hint=ui_hint):
        say(line)
    if not report.success:
        raise fail(f"run {report.run_id} failed: {report.failure}", EXIT_INVALID)


@app.command()
def train(
    data: Annotated[
        Path | None,
        typer.Option(
            help="Your Parquet file: an event log (DESIGN.md section 3), or the earlier "
            "system's precomputed features (the seven columns and is_fraud) "
            "[default: simulated events]."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Training and split seed.")] = 7,
    target_fpr: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="FPR the decision threshold aims at.")
    ] = 0.01,
    policy: Annotated[
        Path | None, typer.Option(help="Policy YAML [default: mlops/promotion_policy.yaml].")
    ] = None,
) -> None:
    """Train, gate and publish from your data (the seed's `python -m src.train --data FILE`).

    An event log runs the whole lineage (validation, feature replay, the full model and every
    request profile's), with `sentinel materialize`'s exit codes: 0 when the run succeeded,
    a refused gate included. A table of precomputed features trains that profile's model
    alone: exit 0 when published, 1 when its expectations, its split or the gate refused it.
    2 on unusable input."""
    require_file(data)
    _check_signing_key()
    from sentinel_dagster.cli.runner import with_policy
    from sentinel_dagster.core.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy
    from sentinel_dagster.data.dataset import DatasetError, read_parquet
    from sentinel_dagster.training.precomputed import PrecomputedError, table_profile

    try:
        rules = load_policy(policy or DEFAULT_POLICY_PATH)
        frame = read_parquet(data) if data is not None else None
    except (DatasetError, PolicyError) as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    params = {"seed": seed, "target_fpr": target_fpr}
    if frame is None or "event_time" in frame or "card_id" in frame:  # an event log
        ops: dict[str, Any] = {"candidate_model": {"config": params}}
        if data is not None:
            ops["transactions"] = {"config": {"source_path": str(data.resolve())}}
        run_config = {"ops": ops}
        _materialize_and_report(None, with_policy(run_config, policy) if policy else run_config)
        return
    assert data is not None  # a table was read
    try:
        profile = table_profile(frame, rules.profiles())
    except PrecomputedError as exc:
        raise fail(f"{data}: {exc}", EXIT_INVALID) from None
    _train_precomputed(frame, profile, rules, data, seed, target_fpr)


def _train_precomputed(
    frame: Any, profile: Any, rules: Any, data: Path, seed: int, target_fpr: float
) -> None:
    from sentinel_dagster.core import git
    from sentinel_dagster.training.precomputed import (
        NEEDS_EVENT_LOG,
        PrecomputedError,
        train_precomputed,
        validate_precomputed,
    )
    from sentinel_dagster.training.xgboost_candidate import TrainParams

    home = paths.sentinel_home()
    report = validate_precomputed(frame, profile, rules.data, paths.data_docs_dir(home))
    if not report.success:
        _print_failures(report)
        raise typer.Exit(EXIT_INVALID)
    say(
        f"{data}: {len(frame):,} rows of precomputed features: training the {profile.name} "
        f"model ({', '.join(profile.features)})"
    )
    try:
        run = train_precomputed(
            frame, profile, TrainParams(seed=seed, target_fpr=target_fpr), rules, home,
            str(data), git.code_version(),
        )  # fmt: skip
    except PrecomputedError as exc:
        raise fail(f"{data}: {exc}", EXIT_INVALID) from None
    m, h = run.evaluation.metrics, run.evaluation.heuristic
    say(
        f"holdout ({len(run.evaluation.scores):,} rows, stratified random split: weaker "
        f"evidence than out-of-time): PR-AUC {m.pr_auc:.4f} (heuristic {h.pr_auc:.4f}), "
        f"recall at 1% FPR {m.recall_at_1pct_fpr:.4f} (heuristic {h.recall_at_1pct_fpr:.4f})"
    )
    for check in run.decision.checks:
        say(f"  {'ok ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    if run.published is None:
        for line in run.decision.refusal():
            say(line, err=True)
        raise typer.Exit(EXIT_INVALID)
    version, role = run.published
    if role == "champion":
        serves = (
            "serving now: requests without a card_id that carry these features are scored "
            "by it, and, with no full model in this bundle, raw events too"
        )
    else:
        serves = f"shadowed beside champion {run.champion} until promoted"
    say(f"published {version} as {role}, {serves} (MLflow run {run.mlflow_run_id})")
    say(f"note: {NEEDS_EVENT_LOG}")


def _service_settings() -> Any:
    """The service's SENTINEL_* settings, or a one-line error (not a traceback per worker)."""
    from pydantic import ValidationError

    from serving.settings import ServiceSettings

    try:
        return ServiceSettings()
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise fail(f"invalid SENTINEL_* settings: {problems}", EXIT_UNUSABLE) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    server_log_level: Annotated[
        str, typer.Option("--server-log-level", hidden=True, help="uvicorn's own log level.")
    ] = "info",
) -> None:
    """Run the scoring service (as `uvicorn serving.app:app --no-access-log`); settings from
    SENTINEL_*.

    More than one worker needs SENTINEL_REDIS_URL: in-memory state would be split between
    the workers, each answering from the payments it happened to receive."""
    if workers < 1:
        raise fail("--workers must be at least 1", EXIT_UNUSABLE)
    settings = _service_settings()
    if workers > 1 and not settings.redis_url:
        raise fail(
            f"--workers {workers} needs SENTINEL_REDIS_URL: without a shared store each worker "
            "would keep its own card and merchant state and answer from part of the traffic",
            EXIT_UNUSABLE,
        )
    _check_access(settings, host)
    import uvicorn

    # uvicorn's own access log stays off: a text line per request costs throughput; the
    # service's JSON one is opt-in (SENTINEL_ACCESS_LOG, serving/access_log.py).
    uvicorn.run(
        "serving.app:app", host=host, port=port, workers=workers,
        log_level=server_log_level, access_log=False,
    )  # fmt: skip


def _check_access(settings: Any, host: str) -> None:
    """The keys file must be usable, and without keys only loopback may be bound."""
    import ipaddress

    from serving.api_keys import KeyFileError, KeyRing

    if settings.api_keys_file is not None:
        try:
            KeyRing(settings.api_keys_file)
        except KeyFileError as exc:
            raise fail(str(exc), EXIT_UNUSABLE) from None
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not settings.allow_unauthenticated:
        raise fail(
            f"--host {host} is not loopback and authentication is off: set "
            "SENTINEL_API_KEYS_FILE (sentinel api-key create), or "
            "SENTINEL_ALLOW_UNAUTHENTICATED=true if a gateway in front authenticates",
            EXIT_UNUSABLE,
        )


api_key_app = typer.Typer(
    help="API keys for the scoring service (SENTINEL_API_KEYS_FILE): create, list, revoke.",
    no_args_is_help=True,
)
app.add_typer(api_key_app, name="api-key")
KeysFile = Annotated[
    Path,
    typer.Option(
        "--file", envvar="SENTINEL_API_KEYS_FILE", help="The keys file the service reads."
    ),
]


@api_key_app.command("create")
def api_key_create(
    name: Annotated[str, typer.Argument(help="Who uses it, e.g. checkout-eu.")],
    keys_file: KeysFile,
    scope: Annotated[
        list[str], typer.Option("--scope", help="score, feedback or admin; repeat for more.")
    ],
) -> None:
    """Add a key and print its token once: only its hash is kept."""
    from serving.api_keys import KeyFileError, create_key

    try:
        token = create_key(keys_file, name, scope)
    except KeyFileError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    say(token)
    say(f"key {name!r} ({', '.join(sorted(scope))}) added to {keys_file}; the token above "
        "is not stored anywhere: hand it to the caller now", err=True)  # fmt: skip


@api_key_app.command("list")
def api_key_list(keys_file: KeysFile) -> None:
    """The keys in the file: name, scopes, creation time, own rate limits (never a hash)."""
    from serving.api_keys import KeyFileError, read_keys

    try:
        keys = read_keys(keys_file)
    except KeyFileError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    for key in keys:
        limits = ", ".join(f"{route}={rate}" for route, rate in key.rate_limits.items())
        say(f"{key.name}\t{','.join(sorted(key.scopes))}\t{key.created_at or '-'}\t{limits}")


@api_key_app.command("revoke")
def api_key_revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")], keys_file: KeysFile
) -> None:
    """Remove a key: the service refuses it within a second (it re-reads the file)."""
    from serving.api_keys import KeyFileError, revoke_key

    try:
        revoke_key(keys_file, name)
    except KeyFileError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    say(f"key {name!r} revoked in {keys_file}")


@app.command()
def replay(
    in_path: Annotated[Path, typer.Argument(help="Parquet file of events (and labels).")],
    url: Annotated[str, typer.Option(help="The scoring service.")] = "http://127.0.0.1:8000",
    rate: Annotated[
        float, typer.Option(min=0.0, help="Events per second; 0 sends as fast as possible.")
    ] = 0.0,
    since: Annotated[
        str | None, typer.Option(help="Only events from this UTC day on, YYYY-MM-DD.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many events.")] = None,
    drain_labels: Annotated[
        bool, typer.Option(help="After the last event, send the labels still to come.")
    ] = True,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SENTINEL_API_KEY",
            help="A key with the score and feedback scopes, when "
            "the service has authentication on.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Send events to a running service in event-time order, and fraud labels to
    /v1/feedback once their label_time has passed in the replay's time."""
    require_file(in_path)
    import pandas as pd

    from sentinel_dagster.data.dataset import DatasetError, SchemaError, load_transactions
    from sentinel_dagster.shadow.traffic_replay import ServiceClient, ServiceError, replay_traffic

    try:
        frame = load_transactions(in_path)
        client = ServiceClient(url, api_key=api_key)
        start = pd.Timestamp(since, tz="UTC") if since else None
    except DatasetError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    except SchemaError as exc:
        raise fail(f"{in_path}: {exc}", EXIT_INVALID) from None
    except ValueError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    if start is not None:
        frame = frame[frame["event_time"] >= start]
    if limit is not None:
        frame = frame.sort_values("event_time", kind="stable").head(limit)
    try:
        with progress_bar("replaying", "{task.completed:,} events") as bar:
            task = bar.add_task("replay", total=len(frame))
            summary = replay_traffic(
                frame, client, rate or None, lambda n: bar.update(task, completed=n), drain_labels
            )
    except ServiceError as exc:
        raise fail(f"the service is not answering: {exc}", EXIT_UNUSABLE) from None
    finally:
        client.close()
    say(summary.one_line())
    if summary.events and summary.errors == summary.events:
        raise fail("every event was refused by the service", EXIT_INVALID)


@app.command()
def rollback() -> None:
    """Make the previous champion the champion again (the service hot-reloads it)."""
    from sentinel_dagster.governance.champion import ChampionError
    from sentinel_dagster.governance.champion import rollback as roll_back
    from serving.registry import Registry

    home = paths.sentinel_home()
    try:
        move = roll_back(Registry(home / "registry"), home)
    except ChampionError as exc:
        raise fail(str(exc), EXIT_INVALID) from None
    say(f"champion: {move.replaced} -> {move.champion}")
    if move.alias_error:
        say(f"warning: MLflow aliases did not follow: {move.alias_error}", err=True)


@app.command()
def up(
    ui_port: Annotated[int, typer.Option(help="Dagster UI port.")] = 3000,
    api_port: Annotated[int, typer.Option(help="Scoring service port.")] = 8000,
) -> None:
    """Materialize the lineage if no champion is published yet, then run the Dagster UI and
    daemon (schedules and sensors live) and the scoring service until Ctrl-C."""
    from sentinel_dagster.cli import stack
    from sentinel_dagster.cli.runner import local_instance
    from serving.registry import Registry

    _service_settings()  # a bad SENTINEL_* setting: say so before starting anything
    _check_signing_key()
    home = paths.sentinel_home()
    if Registry(home / "registry").pointer("champion") is None:
        say("no champion yet: materializing the lineage (about a minute on an idle machine)")
        _materialize_and_report(None, None, launched_by="sentinel-up", ui_hint=False)
    local_instance(home).dispose()  # the instance the UI shows: the one runs are recorded in
    stack.stop_on_signals()
    try:
        running = stack.start(home, ui_port, api_port)  # stops what it started if it fails
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    problem: str | None = None
    try:  # whatever happens from here, the children are stopped
        problem = stack.wait_until_ready(running)
        if problem is None:
            for line in stack.banner(running):
                say(line)
            problem = stack.wait_for_exit(running)
    except KeyboardInterrupt:
        problem = None
    finally:
        stack.stop(running)
    if problem is not None:
        raise fail(problem, EXIT_INVALID)
    say("stopped")


@app.command()
def demo(
    api_url: Annotated[str, typer.Option(help="The running service.")] = "http://127.0.0.1:8000",
) -> None:
    """Show the champion-challenger loop on the running system (start it with `make run`)."""
    from sentinel_dagster.cli.demo import DemoError, run_demo

    try:
        run_demo(paths.sentinel_home(), api_url, say)
    except DemoError as exc:
        raise fail(str(exc), EXIT_INVALID) from None


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    context: typer.Context,
    http: Annotated[bool, typer.Option(help="The wrk benchmarks against real servers.")] = False,
) -> None:
    """Run the benchmarks of a source checkout (what `make bench` runs): in-process ones by
    name (simulator, validation, replay, online, heuristic, training, profiles, lineage; all
    by default), or --http. Results go to $SENTINEL_HOME/bench/ and docs/BENCHMARKS.md says
    how to read them."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks").is_dir():
        raise fail(f"no benchmarks/ next to {root}: run this from a source checkout", EXIT_UNUSABLE)
    module = "benchmarks.http.run" if http else "benchmarks.run"
    code = subprocess.run([sys.executable, "-m", module, *context.args], cwd=root).returncode
    if code != 0:
        raise typer.Exit(code)


signing_key_app = typer.Typer(
    help="Ed25519 keys that sign published bundles (README: Signed bundles).",
    no_args_is_help=True,
)
app.add_typer(signing_key_app, name="signing-key")


@signing_key_app.command("generate")
def signing_key_generate(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for NAME.key and NAME.pub (created).")
    ],
    name: Annotated[str, typer.Option(help="File name of the pair.")] = "bundle-signing",
) -> None:
    """Make a key pair: NAME.key, the publisher's private key (mode 0600, keep it secret), and
    NAME.pub, the public key the scoring service trusts. Never overwrites a file."""
    from sentinel_dagster.governance.signing_keys import SIGNING_KEY_FILE_VAR, write_key_pair
    from serving.settings import BUNDLE_PUBLIC_KEYS_VAR
    from serving.signatures import SigningKeyError

    try:
        pair = write_key_pair(out, name)
    except SigningKeyError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    say(f"key id {pair.key_id}: wrote {pair.private} (private, mode 0600) and {pair.public}")
    say("the publisher (Dagster, sentinel train) signs with:")
    say(f"  export {SIGNING_KEY_FILE_VAR}={pair.private.resolve()}")
    say("the scoring service trusts (rotating: add it to the list, comma-separated):")
    say(f"  export {BUNDLE_PUBLIC_KEYS_VAR}={pair.public.resolve()}")


def _check_signing_key() -> None:
    """A misconfigured publisher key is said before a run trains for a minute and then
    fails to publish."""
    from sentinel_dagster.governance.signing_keys import signing_key_from_env
    from serving.signatures import SigningKeyError

    try:
        signing_key_from_env()
    except SigningKeyError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None


def main() -> None:
    app(prog_name="sentinel")


if __name__ == "__main__":
    main()

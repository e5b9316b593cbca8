"""Materializing the lineage in process against the persistent Dagster instance.

Runs launched here are stored under DAGSTER_HOME, so they show in the Dagster UI exactly
like runs launched from it.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import DagsterEventType

from sentinel_dagster.core import paths
from sentinel_dagster.core.yaml_files import YamlFileError, read_yaml

DAGSTER_YAML = """\
# Written by sentinel: a local instance with SQLite storage under this folder.
telemetry:
  enabled: false
"""


# Every event stays in the instance (and the UI); the terminal gets the run's report alone,
# which says what failed and why (a refused check's column, observation and rows) without
# Dagster's stack traces, printed twice, for what is a user's bad data.
QUIET_LOGS: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


class MaterializeError(Exception):
    """The selection or the instance is unusable (not a failed run)."""


def local_instance(home: Path) -> dg.DagsterInstance:
    """The persistent instance under SENTINEL_HOME/dagster, created on first use."""
    dagster_home = paths.dagster_home(home)
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return dg.DagsterInstance.from_config(str(dagster_home))


@dataclass
class RunReport:
    run_id: str
    success: bool
    dagster_home: Path
    materialized: list[tuple[str, str | None]] = field(default_factory=list)  # (asset, path)
    seconds: dict[str, float] = field(default_factory=dict)  # asset -> its body's wall time
    checks: list[tuple[str, bool]] = field(default_factory=list)  # (check, passed)
    check_failures: dict[str, list[str]] = field(default_factory=dict)  # check -> what failed
    refused_data: str | None = None  # where the data a blocking check refused was moved
    data_docs: str | None = None
    published: str | None = None  # "version as role" when a bundle was published
    refused: list[str] = field(default_factory=list)  # the promotion gate's failed checks
    failure: str | None = None

    def lines(self, ui_hint: bool = True) -> list[str]:
        """What the run did beyond what `progress_lines` said as it went (each asset and
        check): the outcome, each failed check's details, refused data, the Data Docs page,
        the bundle or the gate's reasons; `ui_hint`: how to see the run in the UI."""
        lines = [f"run {self.run_id}: {'success' if self.success else 'FAILED'}"]
        for name, ok in self.checks:
            if not ok:
                lines.append(f"  check {name}: FAILED")
            lines += [f"    {detail}" for detail in self.check_failures.get(name, [])]
        if self.refused_data:
            lines.append(f"refused data moved to {self.refused_data}: nothing downstream reads it")
        if self.data_docs:
            lines.append(f"GX Data Docs: {self.data_docs}")
        if self.published:
            lines.append(f"published bundle {self.published}")
        if self.refused:  # a refusal is an outcome of a successful run: say why, in one block
            lines.append(
                f"promotion gate refused ({len(self.refused)} failed checks): "
                "nothing published, the champion stays"
            )
            lines += [f"  - {reason}" for reason in self.refused]
        if ui_hint:
            lines.append(f"Dagster instance: {self.dagster_home} (UI: make ui, or dg dev)")
        return lines


def _report(result: dg.ExecuteInProcessResult, home: Path) -> RunReport:
    report = RunReport(
        run_id=result.run_id, success=result.success, dagster_home=paths.dagster_home(home)
    )
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        metadata = materialization.metadata
        key = materialization.asset_key.to_user_string()
        where = metadata.get("path")
        report.materialized.append((key, str(where.value) if where else None))
        if "seconds" in metadata:  # sentinel_dagster/defs/timing.py
            report.seconds[key] = float(metadata["seconds"].value)  # type: ignore[arg-type]
        if "role" in metadata and "version" in metadata:  # model_bundle published
            report.published = f"{metadata['version'].value} as {metadata['role'].value}"
        if key == "promotion_decision" and not metadata["passed"].value:
            # its reasons are a markdown list in the UI, one "- reason" per line
            reasons = str(metadata["reasons"].value).splitlines()
            report.refused = [r.removeprefix("- ") for r in reasons]
    for evaluation in result.get_asset_check_evaluations():
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        report.checks.append((name, evaluation.passed))
        docs = evaluation.metadata.get("data_docs")
        if docs is not None:
            report.data_docs = str(docs.value)
        failed = evaluation.metadata.get("failures")
        if failed is not None:
            report.check_failures[name] = _failure_lines(failed.value)
        elif not evaluation.passed and evaluation.description:  # e.g. the drift watch's warning
            report.check_failures[name] = [evaluation.description]
        refused = evaluation.metadata.get("refused_data")
        if refused is not None:
            report.refused_data = str(refused.value)
    failures = [e for e in result.all_events if e.is_step_failure]
    if failures:
        error = failures[0].step_failure_data.error
        message = error.message.strip() if error else ""
        # The error's class path adds nothing to its message (a dg.Failure is the asset's own
        # explanation; a refused check lists the checks, detailed above).
        message = message.split(": ", 1)[-1] if message.startswith("dagster") else message
        report.failure = f"{failures[0].step_key}: {' '.join(message.split())}"
    return report


def _failure_lines(failures: Any) -> list[str]:
    """'expectation (column): observation' and a few example rows, per failed expectation."""
    lines = []
    for f in failures if isinstance(failures, list) else []:
        column = f" ({f.get('column')})" if f.get("column") else ""
        lines.append(f"{f.get('expectation')}{column}: {f.get('observed')}")
        lines += [f"  e.g. {example}" for example in (f.get("examples") or [])[:3]]
    return lines


def load_run_config(path: Path) -> dict[str, Any]:
    """A run config YAML file, as the Dagster UI's launchpad takes it."""
    try:
        config = read_yaml(path, "run config file")
    except YamlFileError as exc:
        raise MaterializeError(str(exc)) from None
    if not isinstance(config, dict):
        raise MaterializeError(f"run config {path} must be a mapping, e.g. ops: ...")
    return config


def with_policy(run_config: dict[str, Any] | None, policy: Path) -> dict[str, Any]:
    """`run_config` with the `policy` resource reading `policy` (over any path it named)."""
    config = dict(run_config or {})
    config["resources"] = {
        **(config.get("resources") or {}),
        "policy": {"config": {"path": str(policy.resolve())}},
    }
    return config


SELECTION_JOB = "materialize"  # the job a `--select` runs as (not `__ephemeral_asset_job__`)
LAUNCHED_BY = "sentinel/launched_by"  # run tag: cli, demo, sentinel-up (the UI filters)


def _selection_job(defs: dg.Definitions, select: str) -> dg.JobDefinition:
    """The selection as a named asset job over the code location's assets and checks."""
    named = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        resources=defs.resources,
        jobs=[dg.define_asset_job(SELECTION_JOB, selection=select)],
    )
    return named.resolve_job_def(SELECTION_JOB)


def progress_lines(say: Callable[[str], None]) -> Callable[[dg.EventLogEntry], None]:
    """An event listener saying what the run does as it does it: each asset once
    materialized (with its seconds), each check once evaluated, each failed or skipped step."""

    def on_event(entry: dg.EventLogEntry) -> None:
        event = entry.dagster_event
        if event is None:
            return
        if event.is_step_materialization:
            materialization = event.step_materialization_data.materialization
            seconds = materialization.metadata.get("seconds")
            took = f"{float(seconds.value):6.1f} s" if seconds else " " * 8  # type: ignore[arg-type]
            where = materialization.metadata.get("path")
            stored = str(where.value) if where is not None else "materialized"
            say(f"  {materialization.asset_key.to_user_string():<26}{took}  {stored}")
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.asset_check_evaluation_data
            outcome = "passed" if evaluation.passed else "FAILED"
            say(f"  {'check ' + evaluation.check_name:<34}  {outcome}")
        elif event.is_step_failure:
            say(f"  {event.step_key or '':<34}  FAILED")
        elif event.is_step_skipped:
            say(f"  {event.step_key or '':<34}  skipped (an earlier step refused or failed)")

    return on_event


def materialize_lineage(
    select: str | None = None,
    run_config: dict[str, Any] | None = None,
    home: Path | None = None,
    *,
    job: str | None = None,
    launched_by: str = "cli",
    progress: Callable[[str], None] | None = None,
) -> RunReport:
    """Run a job of the code location (`main_job` unless `select` or `job` is given), or
    an asset selection such as 'group:data' as the job `materialize`; tagged with who
    launched it and what it selected. `progress`, if given, hears a line per asset and
    check as the run goes."""
    from sentinel_dagster.definitions import build_defs

    defs = build_defs(str(home) if home else "")
    home = home or paths.sentinel_home()
    config = {**QUIET_LOGS, **(run_config or {})}
    what = select or job or "main_job"
    tags = {LAUNCHED_BY: launched_by, "sentinel/selection": what}
    with local_instance(home) as instance:
        try:
            if select is None:
                job_def = defs.resolve_job_def(job or "main_job")
            else:
                job_def = _selection_job(defs, select)
            run_id = str(uuid.uuid4())
            if progress is not None:
                instance.add_event_listener(run_id, progress_lines(progress))
            result = job_def.execute_in_process(
                run_config=config, instance=instance, raise_on_error=False, tags=tags, run_id=run_id
            )
        except dg.DagsterError as exc:
            reason = exc.__cause__ or exc  # Dagster wraps the useful message
            raise MaterializeError(f"cannot materialize {what}: {reason}") from None
        return _report(result, home)

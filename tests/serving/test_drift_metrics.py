"""The drift watch's summary file as Prometheus gauges: exported at scrape time, re-read only
when it changes, and never a broken /metrics when it is missing or garbage."""

import json
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from serving.drift_metrics import DriftCollector

SUMMARY = {
    "generated_at": 1_800_000_000.5,
    "champion_version": "20260101T120000-run00001",
    "status": "drifted",
    "drifted": True,
    "events": 1200,
    "feature_psi": {"amount": 0.41, "txn_count_24h": 0.02},
    "score_psi": 0.07,
    "decline_rate_live": 0.031,
    "decline_rate_reference": 0.015,
    "decline_rate_change": 0.016,
}


def samples(text: str) -> list[str]:
    """The sample lines of an exposition (without # HELP and # TYPE)."""
    return [line for line in text.splitlines() if not line.startswith("#")]


def scrape(path: Path) -> tuple[str, DriftCollector]:
    registry = CollectorRegistry()
    collector = DriftCollector(path)
    registry.register(collector)
    return generate_latest(registry).decode(), collector


def write(path: Path, summary: object) -> None:
    """As the pipeline does: a new file renamed over the old one."""
    tmp = path.with_name(".drift.json.tmp")
    tmp.write_text(summary if isinstance(summary, str) else json.dumps(summary))
    os.replace(tmp, path)


def test_the_summary_is_exported_as_gauges(tmp_path: Path) -> None:
    path = tmp_path / "drift.json"
    write(path, SUMMARY)
    text, _ = scrape(path)
    assert 'sentinel_drift_feature_psi{feature="amount"} 0.41' in text
    assert 'sentinel_drift_feature_psi{feature="txn_count_24h"} 0.02' in text
    assert "sentinel_drift_score_psi 0.07" in text
    assert "sentinel_drift_decline_rate_change 0.016" in text
    assert "sentinel_drift_checked_timestamp_seconds 1.8000000005e+09" in text
    assert "sentinel_drift_drifted 1.0" in text
    assert "# TYPE sentinel_drift_score_psi gauge" in text


def test_the_file_is_parsed_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "drift.json"
    write(path, SUMMARY)
    registry = CollectorRegistry()
    collector = DriftCollector(path)
    registry.register(collector)
    first = collector.summary()
    assert collector.summary() is first  # unchanged file: the parsed summary is kept
    write(path, {**SUMMARY, "drifted": False, "score_psi": None, "feature_psi": {}})
    lines = samples(generate_latest(registry).decode())
    assert "sentinel_drift_drifted 0.0" in lines
    assert not any(line.startswith("sentinel_drift_score_psi") for line in lines)
    assert not any(line.startswith("sentinel_drift_feature_psi") for line in lines)


def test_a_missing_or_garbage_file_exports_nothing_and_scrapes_still_work(tmp_path: Path) -> None:
    path = tmp_path / "monitoring" / "drift.json"
    text, collector = scrape(path)  # the watch has not run yet: no folder, no file
    assert samples(text) == []
    path.parent.mkdir()
    for garbage in ("{not json", "[1, 2]", ""):
        write(path, garbage)
        assert samples(scrape(path)[0]) == []
    # Wrong types are left out field by field; the sound ones still export.
    write(path, {**SUMMARY, "score_psi": "high", "drifted": "yes", "feature_psi": {"a": None}})
    lines = samples(scrape(path)[0])
    assert "sentinel_drift_decline_rate_change 0.016" in lines
    assert not any(line.startswith(("sentinel_drift_score_psi", "sentinel_drift_drifted",
                                    "sentinel_drift_feature_psi")) for line in lines)  # fmt: skip
    write(path, SUMMARY)
    assert collector.summary() == SUMMARY
    path.unlink()  # removed after being read: nothing, not the stale numbers
    assert collector.summary() is None


def test_the_collector_imports_none_of_the_pipeline_libraries() -> None:
    code = (
        "import sys, serving.drift_metrics\n"
        "print(','.join(m for m in ('dagster', 'pandas', 'sentinel_dagster') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""

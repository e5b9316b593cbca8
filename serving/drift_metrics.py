"""The drift watch's latest result as Prometheus gauges, read from its summary file.

The pipeline's `champion_drift` asset compares the champion's live traffic with its bundle's
drift reference and writes `SENTINEL_HOME/monitoring/drift.json` (generated_at,
champion_version, feature_psi, score_psi, decline_rate_change, drifted, ...). This collector
exports that file at scrape time, so alerting needs no access to Dagster:

- `sentinel_drift_feature_psi{feature}`: PSI of each feature judged;
- `sentinel_drift_score_psi`, `sentinel_drift_decline_rate_change` (live minus reference);
- `sentinel_drift_checked_timestamp_seconds`: when the watch last ran (alert on its age);
- `sentinel_drift_drifted`: 1 when the last evaluation found drift, else 0.

The file is parsed again only when it changes (modification time, size or inode: the writer
replaces it by renaming); a missing, unreadable or malformed file exports nothing, and a
malformed field is left out, so `/metrics` never fails because of it.
"""

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_Stamp = tuple[int, int, int]  # (mtime_ns, size, inode)


def _number(value: Any) -> float | None:
    """A finite number from JSON, or None (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


class DriftCollector(Collector):
    """Exports the drift summary file at `path` (SENTINEL_HOME/monitoring/drift.json)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: _Stamp | None = None
        self._summary: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any] | None:
        """The file's content, parsed again only if the file changed since the last call."""
        try:
            stat = self.path.stat()
        except OSError:
            self._stamp, self._summary = None, None
            return None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp != self._stamp:
            self._stamp, self._summary = stamp, _read(self.path)
        return self._summary

    def collect(self) -> Iterator[Metric]:
        summary = self.summary()
        if summary is None:
            return
        features = GaugeMetricFamily(
            "sentinel_drift_feature_psi",
            "PSI of each of the champion's features, live against its bundle's reference",
            labels=["feature"],
        )
        raw = summary.get("feature_psi")
        for name, value in sorted(raw.items()) if isinstance(raw, dict) else []:
            psi = _number(value)
            if psi is not None:
                features.add_metric([str(name)], psi)
        yield features
        singles = (
            ("sentinel_drift_score_psi", "PSI of the champion's live scores against its "
             "holdout's", summary.get("score_psi")),
            ("sentinel_drift_decline_rate_change", "Champion's live decline rate minus its "
             "holdout's", summary.get("decline_rate_change")),
            ("sentinel_drift_checked_timestamp_seconds", "When the drift watch last ran "
             "(unix seconds)", summary.get("generated_at")),
        )  # fmt: skip
        for name, documentation, value in singles:
            number = _number(value)
            if number is not None:
                yield GaugeMetricFamily(name, documentation, value=number)
        drifted = summary.get("drifted")
        if isinstance(drifted, bool):
            yield GaugeMetricFamily(
                "sentinel_drift_drifted",
                "1 when the drift watch's last evaluation found the champion drifted",
                value=1.0 if drifted else 0.0,
            )

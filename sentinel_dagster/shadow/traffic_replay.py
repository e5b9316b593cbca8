"""`sentinel replay`: send an event log to a running scoring service, in event-time order.

Each event is POSTed to `/v1/score`; each fraud label is POSTed to `/v1/feedback` as soon
as its `label_time` has passed in the replay's (compressed) time, before the first event
after it — the order the offline replay uses — and, by default, the labels still due after
the last event follow it, so a short replay still yields its chargebacks. One keep-alive
connection (the standard library's `http.client`: no client dependency for a sequential
sender).
"""

import http.client
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np
import orjson
import pandas as pd

EVENT_FIELDS = ("transaction_id", "card_id", "merchant_id", "amount", "event_time", "channel",
                "device_id", "lat", "lon", "merchant_category")  # fmt: skip


RETRYABLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class ServiceError(ConnectionError):
    """The service cannot be reached at all."""


@dataclass
class ReplaySummary:
    events: int = 0
    errors: int = 0
    labels: int = 0
    label_errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    scored_by: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else math.nan

    def one_line(self) -> str:
        by = ", ".join(f"{k} {v:,}" for k, v in sorted(self.scored_by.items())) or "none"
        return (
            f"sent {self.events:,} events ({self.errors:,} errors) and {self.labels:,} labels "
            f"({self.label_errors:,} errors) in {self.seconds:.1f}s; latency p50 "
            f"{self.percentile(50):.2f} ms, p99 {self.percentile(99):.2f} ms; scored by: {by}"
        )


class ServiceClient:
    def __init__(self, url: str, timeout: float = 10.0, api_key: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--url must look like http://HOST:PORT, got {url!r}")
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self._connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self._headers = {"Content-Type": "application/json"}
        if api_key:  # the service's SENTINEL_API_KEYS_FILE is set: a key with score + feedback
            self._headers["Authorization"] = f"Bearer {api_key}"

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        payload = orjson.dumps(body)
        for attempt in (1, 2):
            try:
                self._connection.request("POST", path, payload, self._headers)
                response = self._connection.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._connection.close()
                self._connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout
                )
                # Retried once only when the server closed an idle keep-alive connection
                # (the request was not processed); never after a timeout, which may have been.
                if attempt == 2 or not isinstance(exc, RETRYABLE):
                    raise ServiceError(f"{self.host}:{self.port}: {exc}") from None
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        if response.status in (401, 403):  # every later call would be refused too: stop
            raise ServiceError(
                f"{path}: {response.status} {answer.get('detail', '')} (send a key with "
                "--api-key or SENTINEL_API_KEY)"
            )
        return response.status, answer

    def close(self) -> None:
        self._connection.close()


def _iso(value: pd.Timestamp) -> str:
    return value.isoformat()


def event_body(row: dict[str, Any]) -> dict[str, Any]:
    body = {k: row[k] for k in EVENT_FIELDS if k in row and not pd.isna(row[k])}
    body["event_time"] = _iso(row["event_time"])
    return body


def label_body(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "transaction_id": row["transaction_id"],
        "is_fraud": True,
        "label_time": _iso(row["label_time"]),
        "card_id": row["card_id"],
        "merchant_id": row["merchant_id"],
        "event_time": _iso(row["event_time"]),
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], frame.to_dict("records"))


def timeline(frame: pd.DataFrame, drain: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    """("label" | "event", row) in time order; a label at an event's time comes first. With
    `drain`, the labels still to come after the last event follow it, as if time went on
    until they arrived (chargebacks trail their payments by days to months)."""
    events = frame.sort_values(["event_time", "transaction_id"], kind="stable")
    labels = pd.DataFrame()
    if {"is_fraud", "label_time"} <= set(frame.columns):
        reported = frame[(frame["is_fraud"] == 1) & frame["label_time"].notna()]
        labels = reported.sort_values(["label_time", "transaction_id"], kind="stable")
    label_rows = _records(labels) if not labels.empty else []
    i = 0
    for row in _records(events):
        while i < len(label_rows) and label_rows[i]["label_time"] <= row["event_time"]:
            yield "label", label_rows[i]
            i += 1
        yield "event", row
    if drain:
        for row in label_rows[i:]:
            yield "label", row


def replay_traffic(
    frame: pd.DataFrame,
    client: ServiceClient,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    drain_labels: bool = True,
) -> ReplaySummary:
    """Send `frame`'s events (and their labels) at `rate` events/s, or as fast as possible."""
    summary = ReplaySummary()
    started = time.perf_counter()
    for kind, row in timeline(frame, drain_labels):
        if kind == "label":
            status, _ = client.post("/v1/feedback", label_body(row))
            summary.labels += 1
            summary.label_errors += status != 200
            continue
        if rate:
            ahead = started + summary.events / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        sent = time.perf_counter()
        status, answer = client.post("/v1/score", event_body(row))
        summary.latencies_ms.append((time.perf_counter() - sent) * 1000)
        summary.events += 1
        if status == 200:
            summary.scored_by[str(answer.get("scored_by"))] += 1
            summary.versions[str(answer.get("model_version"))] += 1
        else:
            summary.errors += 1
        if progress is not None and summary.events % 200 == 0:
            progress(summary.events)
    summary.seconds = time.perf_counter() - started
    return summary

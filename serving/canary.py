"""The canary: a share of cards whose payments the challenger decides, and its automatic stop.

Which cards: a card is in the canary when a hash of (challenger version, card id) falls
below the share, so a card sees one model for as long as the challenger serves, every
worker and host picks the same cards without sharing anything, and raising the share keeps
the cards already in. The challenger's version salts the hash so that each new challenger
is tried on other cards. An event without a card is placed by its transaction id, and one
with neither is always the champion's.

The stop, back to 0% for this challenger until it is replaced or an operator resumes it:
- its breaker opens (the challenger is slow or failing: the champion answers again), or
- its decline rate drifts: over the last `window` events both models scored, the share the
  challenger declines differs from the share the champion declines by more than
  `max_decline_rate_change` (after `min_events`). Both models score every event, so the
  comparison is paired on the same payments and needs no canary traffic to judge.

A stop is written to a `CanaryStops` store (a file under SENTINEL_HOME, or Redis when the
online state is shared) and every worker reads it on its background tick, so one worker's
stop stops them all within about a second.
"""

import hashlib
import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from serving.logs import log_event

log = logging.getLogger("sentinel.serving.canary")
HASH_SCALE = float(1 << 64)
STOP_REASONS = ("breaker_open", "decline_rate")


def in_canary(challenger_version: str, key: str, share: float) -> bool:
    """True if the payment keyed by `key` (its card id) is decided by the challenger."""
    if share <= 0.0:
        return False
    digest = hashlib.blake2b(f"{challenger_version}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / HASH_SCALE < share


class CanaryStops(Protocol):
    """Where a stop is kept, so that every worker sees it."""

    def stopped(self, version: str) -> dict[str, Any] | None: ...
    def stop(self, version: str, record: dict[str, Any]) -> None: ...
    def resume(self, version: str) -> None: ...


class FileStops:
    """Stops as small JSON files, one per challenger version, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, version: str) -> Path:
        return self.folder / f"canary-stopped-{version}.json"

    def stopped(self, version: str) -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads(self._path(version).read_text())
            return record
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # unreadable: stay stopped rather than resume
            return {"reason": "unreadable stop record"}

    def stop(self, version: str, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{self._path(version).name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self._path(version))

    def resume(self, version: str) -> None:
        self._path(version).unlink(missing_ok=True)


class RedisStops:
    """Stops as Redis keys beside the shared online state (no expiry: an operator resumes)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, version: str) -> str:
        return f"{self.prefix}canary:stopped:{version}"

    def stopped(self, version: str) -> dict[str, Any] | None:
        raw = self.client.get(self._key(version))
        return None if raw is None else dict(json.loads(raw))

    def stop(self, version: str, record: dict[str, Any]) -> None:
        self.client.set(self._key(version), json.dumps(record), nx=True)  # the first stop wins

    def resume(self, version: str) -> None:
        self.client.delete(self._key(version))


@dataclass(frozen=True)
class CanaryConfig:
    share: float = 0.0  # of cards decided by the challenger
    max_decline_rate_change: float = 0.01
    min_events: int = 1_000
    window: int = 5_000


class Canary:
    """The share in force for the loaded challenger, and the watch that stops it. Runs on
    the event loop's thread (no lock), like the rest of the scoring path."""

    def __init__(self, config: CanaryConfig, stops: CanaryStops) -> None:
        self.config = config
        self.stops = stops
        self.version: str | None = None  # the challenger the state below is about
        self.stopped: dict[str, Any] | None = None
        self.stop_counts: dict[str, int] = {}
        self._paired: deque[tuple[bool, bool]] = deque(maxlen=config.window)
        self._champion_declines = 0
        self._challenger_declines = 0

    def share(self, challenger_version: str | None) -> float:
        """The share decided by `challenger_version` now (0 when stopped or none)."""
        if challenger_version is None:
            self.version = None  # promoted or removed: nothing to report a share for
            return 0.0
        if self.config.share <= 0.0:
            return 0.0
        if challenger_version != self.version:
            self._follow(challenger_version)
        return 0.0 if self.stopped is not None else self.config.share

    def _follow(self, version: str) -> None:
        """A new challenger: its own stop record, and a fresh decline-rate window."""
        self.version = version
        self._forget()
        self.stopped = self._read(version)

    def _forget(self) -> None:
        """Start the decline-rate window afresh (a new challenger, a resume)."""
        self._paired.clear()
        self._champion_declines = self._challenger_declines = 0

    def _read(self, version: str) -> dict[str, Any] | None:
        try:
            return self.stops.stopped(version)
        except Exception as exc:  # the store is down: keep what we knew
            log_event(log, logging.WARNING, "canary_stop_unreadable", error=type(exc).__name__)
            return self.stopped

    def poll(self) -> None:
        """The background tick: pick up a stop (or a resume) written by another worker."""
        if self.version is not None and self.config.share > 0.0:
            was_stopped = self.stopped is not None
            self.stopped = self._read(self.version)
            if was_stopped and self.stopped is None:  # resumed elsewhere: judge afresh, or
                self._forget()  # the window that stopped it would stop it again at once

    def observe(self, champion_declines: bool, challenger_declines: bool) -> None:
        """One event both models scored; stops the canary when the decline rates part."""
        if self.stopped is not None or self.version is None or self.config.share <= 0.0:
            return
        paired = self._paired
        if len(paired) == paired.maxlen:
            old_champion, old_challenger = paired[0]
            self._champion_declines -= old_champion
            self._challenger_declines -= old_challenger
        paired.append((champion_declines, challenger_declines))
        self._champion_declines += champion_declines
        self._challenger_declines += challenger_declines
        n = len(paired)
        if n < self.config.min_events:
            return
        champion_rate, challenger_rate = self._champion_declines / n, self._challenger_declines / n
        if abs(challenger_rate - champion_rate) > self.config.max_decline_rate_change:
            self.stop(
                "decline_rate", events=n, champion_decline_rate=round(champion_rate, 5),
                challenger_decline_rate=round(challenger_rate, 5),
            )  # fmt: skip

    def stop(self, reason: str, **evidence: Any) -> None:
        """Back to 0% for this challenger, on every worker."""
        if self.stopped is not None or self.version is None:
            return
        record = {"reason": reason, "at": time.time(), "challenger": self.version, **evidence}
        self.stopped = record
        self.stop_counts[reason] = self.stop_counts.get(reason, 0) + 1
        log_event(log, logging.ERROR, "canary_stopped", **record)
        try:
            self.stops.stop(self.version, record)
        except Exception as exc:  # this worker has stopped; the others learn it on recovery
            log_event(log, logging.ERROR, "canary_stop_not_shared", error=type(exc).__name__)

    def resume(self) -> bool:
        """An operator's resume (`POST /admin/canary/resume`): the configured share again."""
        if self.version is None or self.stopped is None:
            return False
        self.stops.resume(self.version)
        self.stopped = None
        self._forget()
        log_event(log, logging.WARNING, "canary_resumed", challenger=self.version)
        return True

    def status(self) -> dict[str, Any]:
        return {
            "configured_share": self.config.share,
            "share": 0.0 if self.stopped is not None or self.version is None else self.config.share,
            "challenger": self.version,
            "stopped": self.stopped,
            "window_events": len(self._paired),
            "max_decline_rate_change": self.config.max_decline_rate_change,
        }

"""What one scoring-service instance holds (built in the app's lifespan), and its
background loop: registry polling, log flushing and the in-memory state's durability
(journal fsync, snapshots: serving/journal.py), off the request path."""

import asyncio
import gc
import logging
import time

from serving.access_control import AccessCollector, AccessControl
from serving.api_keys import KeyRing
from serving.breaker import CircuitBreaker
from serving.canary import Canary, FileStops, RedisStops
from serving.drift_metrics import DriftCollector
from serving.feature_engine import KERNELS, FeatureEngine
from serving.journal import (
    REPLAY_NONE,
    Journal,
    Persistence,
    Replayed,
    fsync_and_close,
    replay,
)
from serving.logs import log_event
from serving.metrics import ServiceMetrics
from serving.models import ModelManager
from serving.rate_limits import MemoryBuckets, RedisBuckets
from serving.redis_state import RedisFeatureEngine
from serving.scored_log import ScoredLog
from serving.scoring import Scorer
from serving.settings import ServiceSettings

log = logging.getLogger("sentinel.serving")
STATE_SNAPSHOT = "feature_state.pkl"
JOURNAL_DIR = "journal"


class Service:
    def __init__(self, settings: ServiceSettings, journal: bool = True) -> None:
        """`journal`: keep the in-memory state durable (journal + snapshots); the shared
        Redis store (`redis_url`) persists itself and never journals."""
        journal = journal and settings.redis_url is None
        self.settings = settings
        self.breaker = CircuitBreaker(settings.breaker_config())
        self.challenger_breaker = CircuitBreaker(settings.breaker_config(), model="challenger")
        self.manager = ModelManager(settings)
        self.snapshot_path = settings.home / "serving" / STATE_SNAPSHOT
        self.journal_dir = settings.home / "serving" / JOURNAL_DIR
        # The lock first: no other process may move the snapshot or the journal while we
        # read them. Without it (another worker owns them) nothing is persisted.
        self.journal: Journal | None = None
        self.journal_refused = False
        if journal:
            self.journal = Journal(self.journal_dir, settings.journal_fsync_ms)
            if not self.journal.lock():
                self.journal, self.journal_refused = None, True
        self._from_snapshot: int | None = None  # events in the loaded snapshot
        self.engine = self._restore_engine()
        # Which feature kernels compute (the compiled ones unless not built: then slower).
        if self.engine.kernels == "compiled":
            log_event(log, logging.INFO, "feature_kernels", kernels="compiled")
        else:
            log_event(log, logging.WARNING, "feature_kernels", kernels="python", reason=KERNELS)
        self.engine.limit_state(*self._state_caps())
        # Keys, limits and canary stops are shared where the state is: Redis when set.
        shared = self.engine.client if isinstance(self.engine, RedisFeatureEngine) else None
        keys = KeyRing(settings.api_keys_file, settings.admin_token)  # a bad file: no start
        buckets = MemoryBuckets() if shared is None else RedisBuckets(shared, settings.redis_prefix)
        self.access = AccessControl(
            keys, settings.route_limits(), buckets, settings.allow_unauthenticated
        )
        stops = (
            FileStops(settings.home / "serving")
            if shared is None
            else RedisStops(shared, settings.redis_prefix)
        )
        self.canary = Canary(settings.canary_config(), stops)
        drift = DriftCollector(settings.home / "monitoring" / "drift.json")  # the drift watch's
        self.metrics = ServiceMetrics(
            self.breaker, self.challenger_breaker, self.canary,
            (AccessCollector(self.access), drift),
        )  # fmt: skip
        # After the caps: the journal replays as it ran, under them.
        self.persistence = self._replay_journal(journal)
        self.log = ScoredLog(settings.home / "scored")
        self.feedback_log = ScoredLog(settings.home / "scored", prefix="feedback")
        self.scorer = Scorer(
            settings, self.manager, self.engine, self.breaker, self.log, self.metrics.hot,
            journal=self.journal, challenger_breaker=self.challenger_breaker, canary=self.canary,
        )  # fmt: skip

    def _state_caps(self) -> tuple[int | None, int | None]:
        """In memory the caps always apply; on Redis they bound every worker's shared state
        together, so only when set explicitly (Redis's own memory is sized separately)."""
        s = self.settings
        if s.redis_url is None:
            return s.max_cards, s.max_merchants
        given = s.model_fields_set
        return (
            s.max_cards if "max_cards" in given else None,
            s.max_merchants if "max_merchants" in given else None,
        )

    def _restore_engine(self) -> FeatureEngine:
        """The shared Redis state when configured; else the state saved at the last
        shutdown (a missing or unreadable one starts cold)."""
        s = self.settings
        config = s.engine_config()
        if s.redis_url:
            log_event(log, logging.INFO, "feature_state_shared", store="redis")  # no URL: secrets
            return RedisFeatureEngine.from_url(
                s.redis_url, config, s.redis_prefix, s.max_clock_skew_s,
                s.redis_timeout_ms / 1000.0,
            )  # fmt: skip
        if not self.snapshot_path.exists():
            return FeatureEngine(config=config)
        try:
            max_clock = time.time() + s.max_clock_skew_s  # clamps a bad clock
            engine = FeatureEngine.restore(
                self.snapshot_path, config.features, max_clock, config.dedup_window_s
            )
        except Exception as exc:  # any unreadable snapshot (other code, other shape): start cold
            log_event(log, logging.WARNING, "feature_state_not_restored", error=type(exc).__name__)
            return FeatureEngine(config=config)
        self._from_snapshot = engine.stats()["events"]
        return engine

    def _replay_journal(self, enabled: bool) -> Persistence | None:
        """Replay the journal written after the loaded snapshot (all of it after a cold
        start) through the engine; then, as the journal's owner, continue it."""
        engine, loaded, mark = self.engine, self._from_snapshot, self.engine.journal_next
        replayed = Replayed()
        if not enabled:  # the shared store (or a caller) keeps no journal
            if self.journal is not None:
                self.journal.unlock()
                self.journal = None
            engine.journal_next = None  # a later snapshot is not the journal's
        else:
            first = 0 if loaded is None else (REPLAY_NONE if mark is None else mark)
            replayed = replay(engine, self.journal_dir, first)
        if loaded is not None or replayed.lines:
            log_event(
                log, logging.INFO, "feature_state_restored",
                snapshot_events=loaded or 0, journal_lines=replayed.lines,
                journal_segments=replayed.segments, torn_lines=replayed.torn,
                skipped_lines=replayed.skipped, events=engine.stats()["events"],
            )  # fmt: skip
        if self.journal is None:
            if self.journal_refused:
                log_event(log, logging.WARNING, "feature_state_not_persisted", reason="locked")
            return None
        self.journal.start(mark or 0)
        s = self.settings
        return Persistence(
            engine, self.journal, self.snapshot_path, s.snapshot_every_events,
            s.snapshot_interval_s, backlog=replayed.lines,
        )  # fmt: skip

    def apply_label(
        self,
        txn_id: str,
        is_fraud: bool,
        label_time: float,
        card_id: str | None = None,
        merchant_id: str | None = None,
        event_time: float | None = None,
    ) -> str:
        """`FeatureEngine.apply_label`, journaled once accepted and written out before the
        caller answers."""
        args = (txn_id, is_fraud, label_time, card_id, merchant_id, event_time)
        outcome = self.engine.apply_label(*args)
        if self.journal is not None:
            self.journal.label(args)
            self.journal.write()
        return outcome

    def reload(self, retry_rejected: bool = False) -> bool:
        before = self.manager.counters.loaded, self.manager.counters.rejected
        changed = self.manager.reload(retry_rejected)
        loaded, rejected = self.manager.counters.loaded, self.manager.counters.rejected
        self.metrics.reloads.labels("loaded").inc(loaded - before[0])
        self.metrics.reloads.labels("rejected").inc(rejected - before[1])
        models = self.manager.current
        self.metrics.model_info.info(
            {
                "champion": models.champion.version if models.champion else "",
                "challenger": models.challenger.version if models.challenger else "",
            }
        )
        return changed

    def follow_controls(self) -> None:
        """The background tick: a changed keys file, full rate-limit buckets, a canary stop
        from another worker."""
        try:
            self.access.tick()
        except Exception as exc:  # the shared store is down: leases are dropped next time
            log_event(log, logging.WARNING, "access_tick_failed", error=type(exc).__name__)
        try:
            self.canary.poll()
        except Exception as exc:  # the shared store is down: keep what we knew
            log_event(log, logging.WARNING, "canary_poll_failed", error=type(exc).__name__)

    def flush(self) -> None:
        """Lines a failed write left behind (the request path writes its own)."""
        if self.journal is not None:
            self.journal.write()
        self.log.flush()
        self.feedback_log.flush()

    async def persist(self) -> None:
        """The background loop's turn for the state: fsync the journal (in a worker thread),
        reap a finished snapshot, start a due one."""
        if self.persistence is None:
            return
        fds = self.persistence.journal.sync_fds()
        if fds:
            await asyncio.to_thread(fsync_and_close, fds)
        self.persistence.tick()

    def shutdown(self) -> None:
        """Write the answers still queued for Redis and the logs, then the final snapshot
        (inline); the journal is then dropped."""
        self.scorer.flush_answers()  # a failure is counted and logged, never raised
        try:
            self.flush()
        except OSError as exc:
            log_event(log, logging.ERROR, "log_flush_failed", error=type(exc).__name__)
        self.log.close()
        self.feedback_log.close()
        dropped = 0
        if self.persistence is not None:
            dropped = self.persistence.close()
        elif self.journal_refused or self.settings.redis_url is not None:
            return  # another process owns the snapshot; Redis persists itself
        else:
            self.engine.snapshot(self.snapshot_path)
        log_event(
            log, logging.INFO, "feature_state_saved", mode="shutdown",
            events=self.engine.stats()["events"], journal_segments_dropped=dropped,
        )  # fmt: skip


# Every FREEZE_EVERY_S the background loop moves what the process holds into the garbage
# collector's permanent generation (after collecting the young generations), so a full
# collection walks only what is newer. Full collections otherwise walk the whole online
# state: 80-150 ms at 300,000 remembered ids, measured; p99 of `sentinel serve` under wrk
# 55 -> 5 ms with this (docs/BENCHMARKS.md). Refcounting still frees frozen objects; only
# reference cycles that were garbage at a freeze would stay, and none was found in 60,000
# scored requests nor around keep-alive connections (unfreeze, collect: 0). A cycle that
# dies after its objects were frozen is never collected either: the cost of this choice.
FREEZE_EVERY_S = 10.0


def freeze_long_lived() -> None:
    gc.collect(1)
    gc.freeze()


async def run_background(service: Service) -> None:
    """Poll the registry, retry failed log writes, fsync the journal, take snapshots and
    keep the long-lived state out of full garbage collections until cancelled. A failing
    step (a full disk, an unreadable registry) is logged and retried on the next turn: it
    never ends the loop."""
    interval = service.settings.reload_interval_s
    fsync_s = service.settings.journal_fsync_ms / 1000.0
    period = min(1.0, interval, fsync_s) if fsync_s > 0 else min(1.0, interval)
    last_reload = last_freeze = time.monotonic()
    while True:
        await asyncio.sleep(period)
        try:
            service.flush()
        except OSError as exc:
            log_event(log, logging.ERROR, "log_flush_failed", error=type(exc).__name__)
        try:
            await service.persist()
        except Exception as exc:
            log_event(log, logging.ERROR, "state_persist_failed", error=type(exc).__name__)
        service.follow_controls()
        if time.monotonic() - last_freeze >= FREEZE_EVERY_S:
            last_freeze = time.monotonic()
            freeze_long_lived()
        if time.monotonic() - last_reload >= interval:
            last_reload = time.monotonic()
            try:
                await asyncio.to_thread(service.reload)
            except Exception as exc:
                log_event(log, logging.ERROR, "reload_failed", error=type(exc).__name__)

"""What one scoring-service instance holds (built in the app's lifespan), and its
background loop: registry polling and log flushing, off the request path."""

import asyncio
import logging
import time

from serving.breaker import CircuitBreaker
from serving.feature_engine import EngineConfig, FeatureEngine
from serving.logs import log_event
from serving.metrics import ServiceMetrics
from serving.models import ModelManager
from serving.scored_log import ScoredLog
from serving.scoring import Scorer
from serving.settings import ServiceSettings

log = logging.getLogger("sentinel.serving")
STATE_SNAPSHOT = "feature_state.pkl"


class Service:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.manager = ModelManager(settings)
        self.snapshot_path = settings.home / "serving" / STATE_SNAPSHOT
        self.engine = self._restore_engine()
        self.breaker = CircuitBreaker(settings.breaker_config())
        self.log = ScoredLog(settings.home / "scored")
        self.feedback_log = ScoredLog(settings.home / "scored", prefix="feedback")
        self.scorer = Scorer(
            settings, self.manager, self.engine, self.breaker, self.log, self.metrics.hot
        )

    def _restore_engine(self) -> FeatureEngine:
        """The state saved at the last shutdown; a missing or unreadable one starts cold."""
        features = self.settings.feature_set()
        if not self.snapshot_path.exists():
            return FeatureEngine(config=EngineConfig(features=features))
        try:
            engine = FeatureEngine.restore(self.snapshot_path, features)
        except Exception as exc:  # any unreadable snapshot (other code, other shape): start cold
            log_event(log, logging.WARNING, "feature_state_not_restored", error=type(exc).__name__)
            return FeatureEngine(config=EngineConfig(features=features))
        log_event(log, logging.INFO, "feature_state_restored", events=engine.stats()["events"])
        return engine

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

    def flush(self) -> None:
        self.log.flush()
        self.feedback_log.flush()

    def shutdown(self) -> None:
        self.flush()
        self.engine.snapshot(self.snapshot_path)
        log_event(log, logging.INFO, "feature_state_saved", events=self.engine.stats()["events"])


async def run_background(service: Service) -> None:
    """Poll the registry and flush the logs until cancelled. A failing step (a full disk, an
    unreadable registry) is logged and retried on the next turn: it never ends the loop."""
    interval = service.settings.reload_interval_s
    last_reload = time.monotonic()
    while True:
        await asyncio.sleep(min(1.0, interval))
        try:
            service.flush()
        except OSError as exc:
            log_event(log, logging.ERROR, "log_flush_failed", error=type(exc).__name__)
        if time.monotonic() - last_reload >= interval:
            last_reload = time.monotonic()
            try:
                await asyncio.to_thread(service.reload)
            except Exception as exc:
                log_event(log, logging.ERROR, "reload_failed", error=type(exc).__name__)

"""The models the service scores with, and their hot reload.

`ModelManager.reload()` runs off the request path: it resolves where the champion and the
challenger live (pinned directories, else the registry pointers), loads and validates any
bundle that changed, and swaps one reference. A request reads `manager.current` once and
finishes on that pair, whatever is swapped meanwhile. An invalid bundle is rejected,
reported in `last_rejected`, and the previous model keeps serving.
"""

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from serving.bundle import Bundle, BundleError, load_bundle
from serving.logs import log_event
from serving.profiles import DEFAULT_PROFILES, RequestProfile, largest_first
from serving.registry import Registry
from serving.settings import ServiceSettings

log = logging.getLogger("sentinel.serving.models")


@dataclass(frozen=True)
class LoadedModels:
    champion: Bundle | None = None
    challenger: Bundle | None = None
    loaded_at: dt.datetime | None = None

    @cached_property
    def known_profiles(self) -> tuple[RequestProfile, ...]:
        """Every profile a request can ask for, largest first: the built-in ones and both
        bundles'. A request carrying one the champion lacks is still recognised, so the
        answer can say which model stood in for it."""
        own = [p for b in (self.champion, self.challenger) if b is not None for p in b.profiles]
        return largest_first([*own, *DEFAULT_PROFILES])


@dataclass(frozen=True)
class Rejection:
    path: str
    reason: str
    at: dt.datetime


@dataclass
class ReloadCounters:
    loaded: int = 0
    rejected: int = 0
    ejected: int = 0  # champions taken out of service for answering non-probabilities


class ModelManager:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.registry = Registry(settings.registry_root())
        self.features = settings.feature_set()  # what the engine computes: bundles must match
        self.current = LoadedModels()
        self.last_rejected: Rejection | None = None
        self.counters = ReloadCounters()
        self._lock = threading.Lock()  # one reload at a time; readers never wait
        self._rejected: set[Path] = set()  # bundles are immutable: do not retry every poll
        self._previous: Bundle | None = None  # the champion before the current one
        self._ejected: set[Path] = set()  # answered non-probabilities: never again
        # Read once: changing the trusted keys takes a restart, which verifies every bundle
        # loaded again.
        self.trusted_keys = settings.trusted_bundle_keys()
        if self.trusted_keys is None:
            log_event(log, logging.INFO, "bundle_signatures", checked=False,
                      reason="SENTINEL_BUNDLE_PUBLIC_KEYS is not set")  # fmt: skip
        else:
            ids = sorted(self.trusted_keys)  # key ids only, never the keys
            log_event(log, logging.INFO, "bundle_signatures", checked=True, trusted_keys=ids)

    def sources(self) -> tuple[Path | None, Path | None]:
        """(champion dir, challenger dir): pinned by the seed's variables, else the registry."""
        champion = self.settings.artifacts_dir
        challenger = self.settings.shadow_artifacts_dir
        if champion is None:
            version = self.registry.pointer("champion")
            champion = self.registry.bundle_dir(version) if version else None
            if challenger is None:
                version = self.registry.pointer("challenger")
                challenger = self.registry.bundle_dir(version) if version else None
        return champion, challenger

    def _resolve(self, role: str, path: Path | None, loaded: Bundle | None) -> Bundle | None:
        if path is None:
            return None
        if loaded is not None and loaded.path == path:
            return loaded  # bundles are immutable: same directory, same model
        if path in self._rejected:
            return loaded
        try:
            bundle = load_bundle(path, self.features, self.trusted_keys)
        except BundleError as exc:
            self._rejected.add(path)
            self.last_rejected = Rejection(str(path), str(exc), dt.datetime.now(dt.UTC))
            self.counters.rejected += 1
            log_event(log, logging.WARNING, "bundle_rejected", role=role, path=str(path),
                      reason=str(exc))  # fmt: skip
            return loaded  # keep serving what we had
        self.counters.loaded += 1
        log_event(log, logging.INFO, "bundle_loaded", role=role, version=bundle.version,
                  signed_by=bundle.signed_by)  # fmt: skip
        return bundle

    def reload(self, retry_rejected: bool = False) -> bool:
        """Load what changed and swap; True if the served models changed."""
        with self._lock:
            if retry_rejected:
                self._rejected = set(self._ejected)
            before = self.current
            champion_dir, challenger_dir = self.sources()
            champion = self._resolve("champion", champion_dir, before.champion)
            challenger = self._resolve("challenger", challenger_dir, before.challenger)
            if challenger is not None and champion is not None and challenger.path == champion.path:
                challenger = None  # a promoted challenger is no longer shadowed
            if champion is before.champion and challenger is before.challenger:
                return False
            if before.champion is not None and champion is not before.champion:
                self._previous = before.champion
            self.current = LoadedModels(champion, challenger, dt.datetime.now(dt.UTC))
            log_event(log, logging.INFO, "models_swapped",
                      champion=champion.version if champion else None,
                      challenger=challenger.version if challenger else None)  # fmt: skip
            return True

    def eject(self, bundle: Bundle, reason: str) -> bool:
        """Take a champion that answered non-probabilities out of service: back to the
        champion before it (the one this process served, else, unless the champion is
        pinned, the registry's `previous_champion`), and never load it again. Without an
        earlier one the broken champion stays and the heuristic answers for it. True if
        this call ejected it."""
        with self._lock:
            current = self.current
            if current.champion is not bundle or bundle.path in self._ejected:
                return False  # already ejected (without an earlier one to serve)
            self._ejected.add(bundle.path)
            self._rejected.add(bundle.path)
            now = dt.datetime.now(dt.UTC)
            ejection = Rejection(str(bundle.path), f"ejected while serving: {reason}", now)
            self.last_rejected = ejection
            self.counters.ejected += 1
            fallback = self._previous
            pinned = self.settings.artifacts_dir is not None  # the registry is not followed
            if (fallback is None or fallback.path in self._rejected) and not pinned:
                version = self.registry.pointer("previous_champion")
                path = self.registry.bundle_dir(version) if version else None
                fallback = self._resolve("previous_champion", path, None)
                self.last_rejected = ejection  # the headline, over a rejected fallback
            log_event(log, logging.ERROR, "bundle_ejected", version=bundle.version, reason=reason,
                      fallback=fallback.version if fallback else None)  # fmt: skip
            if fallback is not None:
                challenger = current.challenger if current.challenger is not fallback else None
                self.current = LoadedModels(fallback, challenger, now)
                self._previous = None
            return True

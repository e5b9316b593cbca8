"""Where the feature engine keeps its state, behind a small interface.

State is a few named tables (cards, merchants, recent transaction ids, labels), each a
mapping from key to value. The engine reads and writes them as mappings, so a shared store
(a Redis-backed mapping, for several workers and replicas) can replace the in-memory one
without touching the feature logic; a store whose values are copies sets `write_back` and
gets every changed value assigned back.

Eviction is memory management only: the engine ignores expired state when it reads it, so
results never depend on when eviction runs. The in-memory store remembers the order in
which keys were added; a sweep pops keys from the front while they are older than the
cutoff, deletes the idle ones and re-queues the live ones at their current age. Each key
sits in the queue about once, nothing is done per read, and no sweep scans the whole table.

A table may also be capped (`cap`): when adding a new key takes it over its limit, keys are
popped from the same queue's front, a key used since it was queued is re-queued at its
current age (a second chance) and the first one that was not is evicted (never the key being
added), until the table is back under the limit. So the least recently used keys go first
(the "clock" approximation of LRU), each key is re-queued at most once per use, and under
the limit the cost is one `len()` per new key. Unlike idle eviction this does change
results: an evicted card or merchant starts cold, exactly like one idle beyond every window.
Evictions are counted per table and reason (`cap`, `idle`).
"""

import os
import pickle
from collections import defaultdict, deque
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

SNAPSHOT_FORMAT = 1
EVICTION_REASONS = ("cap", "idle")


class Cap(NamedTuple):
    limit: int
    age: Callable[[Any], float]  # when the value was last used


class StateStoreError(RuntimeError):
    """A shared state store could not be read or written; nothing was answered from it."""


class StateStore(Protocol):
    write_back: bool

    def table(self, namespace: str) -> MutableMapping[str, Any]:
        """The live mapping for a namespace."""
        ...

    def add(self, namespace: str, key: str, value: Any, at: float) -> None:
        """Insert a new key, last used at `at`."""
        ...

    def adder(self, namespace: str) -> Callable[[str, Any, float], None]:
        """`add` bound to one namespace (saves lookups on the per-event path)."""
        ...

    def evict_idle(self, namespace: str, before: float, age: Callable[[Any], float]) -> int:
        """Drop keys whose value's `age(value)` is before `before`; returns how many."""
        ...


class InMemoryStore:
    """Process-local state; `snapshot` and `restore` carry it across restarts."""

    write_back = False  # tables hold the live objects: changes need no assignment

    def __init__(self) -> None:
        self._tables: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        self._queues: defaultdict[str, deque[tuple[float, str]]] = defaultdict(deque)
        self._caps: dict[str, Cap] = {}
        # Counters of this process (not snapshotted): namespace -> reason -> keys evicted.
        self._evicted: defaultdict[str, dict[str, int]] = defaultdict(
            lambda: dict.fromkeys(EVICTION_REASONS, 0)
        )

    def table(self, namespace: str) -> dict[str, Any]:
        return self._tables[namespace]

    def add(self, namespace: str, key: str, value: Any, at: float) -> None:
        table = self._tables[namespace]
        table[key] = value
        self._queues[namespace].append((at, key))
        cap = self._caps.get(namespace)
        if cap is not None and len(table) > cap.limit:
            self._evict_over_cap(namespace, cap, key)

    def adder(self, namespace: str) -> Callable[[str, Any, float], None]:
        table, append = self._tables[namespace], self._queues[namespace].append
        caps = self._caps  # read per call: a cap may be set after the adder was made

        def add(key: str, value: Any, at: float) -> None:
            table[key] = value
            append((at, key))
            if caps:
                cap = caps.get(namespace)
                if cap is not None and len(table) > cap.limit:
                    self._evict_over_cap(namespace, cap, key)

        return add

    def cap(self, namespace: str, limit: int | None, age: Callable[[Any], float]) -> None:
        """Hold at most `limit` keys in `namespace` (None: no limit), evicting the least
        recently used by `age(value)`; applies at once if the table is already larger."""
        if limit is None:
            self._caps.pop(namespace, None)
            return
        if limit < 1:
            raise ValueError(f"{namespace}: a cap must be at least 1 (got {limit})")
        cap = self._caps[namespace] = Cap(limit, age)
        if len(self._tables[namespace]) > limit:
            self._evict_over_cap(namespace, cap)

    def _evict_over_cap(self, namespace: str, cap: Cap, added: str | None = None) -> None:
        """Evict until under the cap: a key used since it was queued gets a second chance,
        and the key just `added` (the most recent one) is never the one evicted."""
        table, queue, age = self._tables[namespace], self._queues[namespace], cap.age
        popleft, append = queue.popleft, queue.append
        dropped = 0
        kept = None
        while len(table) > cap.limit and queue:
            queued, key = popleft()
            if key == added:
                kept = (queued, key)  # back to the end once done
                continue
            value = table.get(key)
            if value is None:
                continue  # already replaced or dropped
            last = age(value)
            if last > queued:  # used since it was queued: a second chance, at its age
                append((last, key))
            else:
                del table[key]
                dropped += 1
        if kept is not None:
            append(kept)
        self._evicted[namespace]["cap"] += dropped

    def evict_idle(self, namespace: str, before: float, age: Callable[[Any], float]) -> int:
        table, queue = self._tables[namespace], self._queues[namespace]
        dropped = 0
        requeue = []
        while queue and queue[0][0] < before:
            _, key = queue.popleft()
            value = table.get(key)
            if value is None:
                continue  # already replaced or dropped
            last = age(value)
            if last < before:
                del table[key]
                dropped += 1
            else:
                requeue.append((last, key))
        queue.extend(requeue)
        if dropped:
            self._evicted[namespace]["idle"] += dropped
        return dropped

    def size(self, namespace: str) -> int:
        return len(self._tables[namespace])

    def limits(self) -> dict[str, int]:
        """The capped namespaces and their limits."""
        return {namespace: cap.limit for namespace, cap in self._caps.items()}

    def evictions(self) -> dict[str, dict[str, int]]:
        """Keys evicted by this process, per namespace and reason (cap, idle)."""
        return {namespace: dict(self._evicted[namespace]) for namespace in self._tables}

    def snapshot(self, path: Path, extra: dict[str, Any]) -> None:
        """Write the whole store atomically (temp file, fsync, rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        payload = {
            "format": SNAPSHOT_FORMAT,
            "tables": dict(self._tables),
            "queues": dict(self._queues),
            "extra": extra,
        }
        with tmp.open("wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def restore(cls, path: Path) -> tuple["InMemoryStore", dict[str, Any]]:
        """A store from a snapshot this code wrote (pickle: trusted local files only)."""
        try:
            with Path(path).open("rb") as f:
                payload = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"cannot read feature-state snapshot {path}: {exc}") from None
        if not isinstance(payload, dict) or payload.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"{path} is not a feature-state snapshot of format {SNAPSHOT_FORMAT}")
        store = cls()
        store._tables.update(payload["tables"])
        store._queues.update(payload["queues"])
        return store, payload["extra"]

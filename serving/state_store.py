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
"""

import os
import pickle
from collections import defaultdict, deque
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, Protocol

SNAPSHOT_FORMAT = 1


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

    def table(self, namespace: str) -> dict[str, Any]:
        return self._tables[namespace]

    def add(self, namespace: str, key: str, value: Any, at: float) -> None:
        self._tables[namespace][key] = value
        self._queues[namespace].append((at, key))

    def adder(self, namespace: str) -> Callable[[str, Any, float], None]:
        table, append = self._tables[namespace], self._queues[namespace].append

        def add(key: str, value: Any, at: float) -> None:
            table[key] = value
            append((at, key))

        return add

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
        return dropped

    def size(self, namespace: str) -> int:
        return len(self._tables[namespace])

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

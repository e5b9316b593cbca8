"""The state journal and background snapshots: the in-memory feature state survives kill -9
(DESIGN.md §3: "snapshots plus log replay").

Kappa-style, the state is a function of its inputs. The journal is an append-only record of
every call that changes the engine, in order: each `FeatureEngine.process` of a scored event
that carries a card (its exact arguments: txn_id, t, card_id, merchant_id, amount, channel,
device_id, lat, lon, category), each applied label (`apply_label`'s arguments) and each
answer kept for retries (`remember_answers`: the transaction id, the request's fingerprint
and the answer), one compact JSON line each (orjson: `["e", ...]`, `["l", ...]` or
`["a", id, fingerprint, {answer}]`; a NaN coordinate is null). An event is recorded once the
engine processed it (a refused one, e.g. a conflicting retry, changed nothing), a label once
`apply_label` accepted it (a refused label raises before changing anything), an answer once
it is known, before it is sent. (The fingerprint travels with the answer so that `e` lines
keep their layout: a version before retries existed replays them, and skips `a` lines.)
Recovery loads the last snapshot and replays the journal written after it through the same
two methods, so the state after a crash equals the one a graceful stop would have kept.

Durability. A request's lines go to the OS in one `os.write` before its answer is sent, so
a killed process (kill -9, the OOM killer, a crash) loses no answered event: the kernel
keeps what was written. A machine crash or power loss can lose what was not yet fsynced:
`journal_fsync_ms` bounds that window (default 1,000: the service's background loop fsyncs
at most once a second, in a worker thread, like Redis's `appendfsync everysec`); 0 fsyncs on
every write, on the request path (slower: one disk flush per request). A failed write is
logged and its lines kept for the next write; the answer is still sent (availability first),
so while the disk fails, answered events can be lost.

Files (`SENTINEL_HOME/serving/journal/`). Numbered segments, `segment-000000000042.jsonl`,
each created with O_EXCL by the one process holding the folder's `LOCK` (flock, released by
the kernel when the process dies). A second process on the same SENTINEL_HOME (another
worker) gets no lock: it starts from the same snapshot and journal but persists nothing.

Snapshots, off the request path like Redis's BGSAVE. When `snapshot_every_events` lines
were journaled or `snapshot_interval_s` passed, the journal rolls over to a new segment and
the process forks at that instant; the child pickles its copy-on-write view of the state
with `FeatureEngine.snapshot` (recording the first segment it does not include), fsyncs and
renames it into place and exits; the parent reaps it without blocking (`waitpid(WNOHANG)` in
the background loop) and only then deletes the older segments. A failed snapshot deletes
nothing and is logged. Graceful shutdown snapshots inline and deletes the journal.
"""

import contextlib
import fcntl
import gc
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import orjson

from serving.feature_engine import FeatureEngine
from serving.logs import log_event
from serving.scored_log import write_out

log = logging.getLogger("sentinel.serving")
SEGMENT_PREFIX, SEGMENT_SUFFIX = "segment-", ".jsonl"
LOCK_NAME = "LOCK"
EVENT, LABEL, ANSWER = "e", "l", "a"
REPLAY_NONE = 2**62  # a snapshot that does not say where the journal continues: replay nothing
CHILD_TIMEOUT_S = 600.0  # at least this long for a snapshot child before it counts as hung
_NEWLINE = orjson.OPT_APPEND_NEWLINE
NAN = math.nan


def segment_name(number: int) -> str:
    return f"{SEGMENT_PREFIX}{number:012d}{SEGMENT_SUFFIX}"


def segments(folder: Path) -> list[tuple[int, Path]]:
    """(number, path) of the journal's segments, oldest first."""
    found = []
    for path in Path(folder).glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"):
        digits = path.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)]
        if digits.isdigit():
            found.append((int(digits), path))
    return sorted(found)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_and_close(fds: list[int]) -> None:
    """For a worker thread: fsync and close descriptors handed over by `Journal.sync_fds`
    (every one is closed; the first error is raised)."""
    error: OSError | None = None
    for fd in fds:
        try:
            os.fsync(fd)
        except OSError as exc:
            error = error or exc
        finally:
            os.close(fd)
    if error is not None:
        raise error


class Journal:
    """The append-only segments of one process's engine inputs (see the module doc)."""

    def __init__(self, folder: Path, fsync_ms: float = 1000.0) -> None:
        self.folder = Path(folder)
        self.fsync_s = fsync_ms / 1000.0
        self.number = -1  # the segment being written (-1: none open)
        self.lines = 0  # lines recorded since the last roll-over
        self.write_errors = 0
        self._pending = bytearray()
        self._fd = -1
        self._lock_fd = -1
        self._retired: list[int] = []  # rolled-over segments still to fsync and close
        self._dirty = False  # written since the last fsync
        self._synced_at = time.monotonic()
        self._failing = False

    # -- ownership ------------------------------------------------------------------------

    def lock(self) -> bool:
        """Take the folder's lock; False when another live process holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the last descriptor releases the flock
            self._lock_fd = -1

    def start(self, at_least: int = 0) -> int:
        """Open the first segment of this process: numbered at least `at_least` (where the
        loaded snapshot says the journal continues) and after every existing segment."""
        existing = segments(self.folder)
        number = max(at_least, existing[-1][0] + 1 if existing else 0)
        self._open(number)
        return self.number

    def _open(self, number: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        while True:
            try:
                fd = os.open(self.folder / segment_name(number), flags, 0o644)
                break
            except FileExistsError:  # not ours: never append to another writer's segment
                number += 1
        self._fd, self.number = fd, number
        fsync_dir(self.folder)

    # -- the request path -------------------------------------------------------------------

    def event(self, args: tuple[Any, ...]) -> None:
        """Record a `FeatureEngine.process` call (its positional arguments)."""
        self._pending += orjson.dumps((EVENT, *args), option=_NEWLINE)
        self.lines += 1

    def answer(self, txn_id: str, fingerprint: str, answer: bytes) -> None:
        """Record an answer kept for retries (`FeatureEngine.remember_answers`); `answer` is
        already JSON, so it is spliced in, not re-encoded."""
        head = orjson.dumps((ANSWER, txn_id, fingerprint))[:-1]  # without its closing bracket
        self._pending += head + b"," + answer + b"]\n"
        self.lines += 1

    def label(self, args: tuple[Any, ...]) -> None:
        """Record an accepted `FeatureEngine.apply_label` call (its positional arguments)."""
        self._pending += orjson.dumps((LABEL, *args), option=_NEWLINE)
        self.lines += 1

    def write(self) -> None:
        """Hand the recorded lines to the OS in one write (and fsync when `fsync_ms` is 0).
        Never raises: a failure is logged once and the lines are kept for the next write."""
        if not self._pending or self._fd < 0:
            return
        try:
            self._write()
        except OSError as exc:
            self.write_errors += 1
            if not self._failing:
                log_event(log, logging.ERROR, "journal_write_failed", error=type(exc).__name__)
            self._failing = True
            return
        if self._failing:
            log_event(log, logging.INFO, "journal_write_recovered", errors=self.write_errors)
            self._failing = False

    def _write(self) -> None:
        write_out(self._fd, self._pending)
        if self.fsync_s <= 0:
            os.fsync(self._fd)
        else:
            self._dirty = True

    # -- the background loop ----------------------------------------------------------------

    def sync_fds(self) -> list[int]:
        """Descriptors for a worker thread to fsync and close (`fsync_and_close`): rolled-over
        segments, and a duplicate of the current one when it was written since its last fsync
        at least `fsync_ms` ago. The flag is cleared here, before the fsync, so a write made
        meanwhile is fsynced next time."""
        fds, self._retired = self._retired, []
        now = time.monotonic()
        if self._dirty and self._fd >= 0 and now - self._synced_at >= self.fsync_s:
            self._dirty = False
            self._synced_at = now
            fds.append(os.dup(self._fd))
        return fds

    def roll(self) -> int:
        """Continue in a new segment; returns its number, the first one that the state as it
        is now does not include. OSError when the recorded lines cannot be written (then
        the state holds lines no segment has: no snapshot may be based on this roll)."""
        self._write()
        old = self._fd
        self._open(self.number + 1)
        if old >= 0:
            self._retired.append(old)
        self.lines = 0
        return self.number

    def drop_before(self, number: int) -> int:
        """Delete the segments numbered below `number` (a committed snapshot holds them)."""
        dropped = 0
        for n, path in segments(self.folder):
            if n < number and not (n == self.number and self._fd >= 0):
                path.unlink(missing_ok=True)
                dropped += 1
        return dropped

    def close_segment(self) -> None:
        """Write, fsync and close the current segment (shutdown). OSError if it cannot."""
        try:
            if self._fd >= 0:
                self._write()
                os.fsync(self._fd)
        finally:
            for fd in [*self._retired, self._fd]:
                if fd >= 0:
                    os.close(fd)
            self._retired, self._fd = [], -1


# -- recovery ---------------------------------------------------------------------------------


@dataclass
class Replayed:
    segments: int = 0
    lines: int = 0  # engine calls replayed
    torn: int = 0  # a last line cut short by a crash mid-write (never an answered event)
    skipped: int = 0  # unreadable lines, or calls the engine refused


def _apply(engine: FeatureEngine, record: list[Any]) -> None:
    kind = record[0]
    if kind == EVENT:
        _, txn, t, card, merchant, amount, channel, device, lat, lon, category = record
        engine.process(
            txn, float(t), card, merchant, float(amount), channel, device,
            NAN if lat is None else float(lat), NAN if lon is None else float(lon), category,
        )  # fmt: skip
    elif kind == ANSWER:
        _, txn, fingerprint, answer = record
        engine.remember_answers([(txn, fingerprint, orjson.dumps(answer))])
    elif kind == LABEL:
        _, txn, is_fraud, label_time, card, merchant, event_time = record
        engine.apply_label(
            txn, bool(is_fraud), float(label_time), card, merchant,
            None if event_time is None else float(event_time),
        )  # fmt: skip
    else:
        raise ValueError(f"unknown journal record {kind!r}")


def replay(engine: FeatureEngine, folder: Path, first: int = 0) -> Replayed:
    """Feed every journal segment numbered `first` or later, in order, through the engine.

    A line without its newline is the end of a write cut short by a crash: the request it
    belonged to was never answered, so it is skipped (with a warning)."""
    done = Replayed()
    for number, path in segments(folder):
        if number < first:
            continue
        try:
            f = path.open("rb")
        except FileNotFoundError:  # deleted meanwhile by the owner (we are not it)
            continue
        done.segments += 1
        with f:
            for line in f:
                if not line.endswith(b"\n"):
                    done.torn += 1
                    log_event(
                        log, logging.WARNING, "journal_torn_line_skipped",
                        segment=number, bytes=len(line),
                    )  # fmt: skip
                    break
                try:
                    _apply(engine, orjson.loads(line))
                except Exception:  # a damaged line, or a call refused (as it was online)
                    done.skipped += 1
                    continue
                done.lines += 1
    if done.skipped:
        log_event(log, logging.WARNING, "journal_lines_skipped", lines=done.skipped)
    return done


# -- snapshots --------------------------------------------------------------------------------


@dataclass
class _Child:
    pid: int
    mark: int  # the first segment the snapshot does not include
    events: int
    tmp: Path
    started: float = 0.0  # time.monotonic() at the fork


def _snapshot_child(
    engine: FeatureEngine, path: Path, tmp: Path, mark: int, parent: int
) -> NoReturn:
    """The forked child: write the snapshot, commit it, exit. Never returns, never runs the
    parent's event loop, handlers or atexit code (os._exit)."""
    code = 1
    try:
        gc.disable()  # fewer copy-on-write page copies; the child lives seconds
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        # Inherited descriptors (the listening socket, client connections, the journal and
        # its lock) stay the parent's: a child outliving a killed parent must hold none.
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        engine.journal_next = mark  # the child's copy: saved with the snapshot
        engine.snapshot(tmp)
        if os.getppid() != parent:  # the parent died: a newer owner may have moved on
            tmp.unlink(missing_ok=True)
            code = 2
        else:
            os.replace(tmp, path)
            fsync_dir(path.parent)
            code = 0
    except BaseException:
        code = 1
    finally:
        os._exit(code)


class Persistence:
    """The journal and the snapshots of one in-memory engine, as the service drives them:
    `tick` from its background loop, `close` at shutdown."""

    def __init__(
        self,
        engine: FeatureEngine,
        journal: Journal,
        path: Path,
        every_events: int,
        interval_s: float,
        backlog: int = 0,  # lines replayed at start: journal no snapshot holds yet
    ) -> None:
        self.engine = engine
        self.journal = journal
        self.path = Path(path)
        self.every_events = every_events
        self.interval_s = interval_s
        self.backlog = backlog
        self.child: _Child | None = None
        # A snapshot child still running after this is killed and counted as failed.
        self.child_timeout_s = max(CHILD_TIMEOUT_S, 4 * interval_s)
        self.snapshots = self.failures = 0
        self._last = time.monotonic()
        self._clean_temporaries()

    def _clean_temporaries(self) -> None:
        """Leftovers of snapshots a crash interrupted (we hold the lock: none is running)."""
        for pattern in (f"{self.path.name}.bg-*", f".{self.path.name}.*"):
            for stale in self.path.parent.glob(pattern):
                stale.unlink(missing_ok=True)

    def due(self) -> bool:
        waiting = self.journal.lines + self.backlog
        if not waiting or self.child is not None:
            return False
        return waiting >= self.every_events or time.monotonic() - self._last >= self.interval_s

    def tick(self, now: Callable[[], float] = time.monotonic) -> None:
        """Reap a finished snapshot child (or kill a hung one); start one when due."""
        self.reap()
        child = self.child
        if child is not None and now() - child.started > self.child_timeout_s:
            self.cancel()  # a hung child would block every later snapshot
            self._failed("child", f"no result after {self.child_timeout_s:g} s")
        if self.due():
            self.start_snapshot()

    def start_snapshot(self, fork: Callable[[], int] = os.fork) -> bool:
        """Roll the journal over and fork a child that writes the snapshot."""
        self._last = time.monotonic()  # a failed attempt waits for the next period too
        try:
            mark = self.journal.roll()
        except OSError as exc:
            self._failed("journal_roll", type(exc).__name__)
            return False
        self.backlog = 0
        tmp = self.path.with_name(f"{self.path.name}.bg-{mark}")
        events = self.engine.stats()["events"]
        parent = os.getpid()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            pid = fork()
        except OSError as exc:
            self._failed("fork", type(exc).__name__)
            return False
        if pid == 0:
            _snapshot_child(self.engine, self.path, tmp, mark, parent)
        self.child = _Child(pid, mark, events, tmp, time.monotonic())
        log_event(
            log, logging.INFO, "feature_state_snapshot_started",
            pid=pid, events=events, journal_segment=mark,
        )  # fmt: skip
        return True

    def reap(self, block: bool = False) -> bool | None:
        """The running child's outcome once it exited (True: committed, the older segments
        deleted; False: failed, nothing deleted); None while it runs or when there is none."""
        child = self.child
        if child is None:
            return None
        try:
            pid, status = os.waitpid(child.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: its outcome is unknown
            pid, status = child.pid, -1
        if pid == 0:
            return None
        self.child = None
        code = os.waitstatus_to_exitcode(status) if status >= 0 else -1
        if code != 0:
            child.tmp.unlink(missing_ok=True)
            self._failed("child", f"exit {code}")
            return False
        self.snapshots += 1
        dropped = self.journal.drop_before(child.mark)
        log_event(
            log, logging.INFO, "feature_state_saved",
            mode="background", events=child.events, journal_segments_dropped=dropped,
        )  # fmt: skip
        return True

    def _failed(self, step: str, error: str) -> None:
        self.failures += 1
        log_event(
            log, logging.ERROR, "feature_state_snapshot_failed", step=step, error=error,
            journal_segments_kept=len(segments(self.journal.folder)),
        )  # fmt: skip

    def cancel(self) -> None:
        """Stop a running snapshot child (its temporary file is removed)."""
        child = self.child
        if child is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child.pid, 0)
        child.tmp.unlink(missing_ok=True)
        self.child = None

    def close(self) -> int:
        """Shutdown: the final snapshot, inline, then the journal is deleted; returns the
        segments deleted. Raises (keeping the journal) if the snapshot cannot be written."""
        self.cancel()  # a late rename of its older snapshot must not replace the final one
        try:
            try:
                self.journal.close_segment()
            except OSError as exc:  # the snapshot below still holds every line
                log_event(log, logging.ERROR, "journal_write_failed", error=type(exc).__name__)
            mark = self.journal.number + 1
            self.engine.journal_next = mark
            self.engine.snapshot(self.path)
            return self.journal.drop_before(mark)
        finally:
            self.journal.unlock()

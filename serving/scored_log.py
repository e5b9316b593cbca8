"""The scored-event log: one JSON line per scored event, for the shadow-comparison report
(and the same class for the feedback log).

Files are `SENTINEL_HOME/scored/scored-YYYYMMDD-<writer>[-N].jsonl`, rotated by UTC day and
by size. `<writer>` is the host name and process id: every process writes its own files
(DESIGN.md §3, "workers never share a file"); readers glob `scored-*.jsonl`.

No acknowledged line is lost to a killed process: the request path `append`s its lines and
then `write`s them, one OS write per request or batch, before the answer is sent. A failed
write keeps the lines for the next write (the service's background loop retries every
second); the lines are not fsynced (a machine crash may lose the last seconds).
"""

import datetime as dt
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import orjson

MAX_FILE_BYTES = 64 * 1024 * 1024
DAY_S = 86_400
_NEWLINE = orjson.OPT_APPEND_NEWLINE


def writer_id() -> str:
    """This process's name in file names: host and pid ('-' inside the host becomes '_')."""
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"
    return f"{host}-{os.getpid()}"


def write_out(fd: int, pending: bytearray) -> None:
    """Write all of `pending` to `fd` and clear it; on OSError only what is still unwritten
    stays in `pending` (so a retry continues where the short write stopped)."""
    view = memoryview(pending)
    done = 0
    try:
        while done < len(pending):
            done += os.write(fd, view[done:])
    finally:
        view.release()
        del pending[:done]


def open_append(path: Path) -> int:
    """An O_APPEND descriptor on `path`; a last line cut short by a killed earlier writer of
    the same name is ended first, so it cannot swallow the next line."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with path.open("rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(fd, b"\n")
    except OSError:
        os.close(fd)
        raise
    return fd


class ScoredLog:
    def __init__(self, folder: Path, prefix: str = "scored", writer: str | None = None) -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.writer = writer or writer_id()
        self._pending = bytearray()
        self._fd = -1
        self._day = -1  # UTC day number of the open file
        self._size = 0
        self.lines_written = 0
        self.write_errors = 0

    def append(self, record: dict[str, Any]) -> None:
        """Buffer one line (NaN and inf are written as null); `write` hands it to the OS."""
        self._pending += orjson.dumps(record, option=_NEWLINE)

    def write(self) -> None:
        """The request path: one OS write of the buffered lines. Never raises: a failure is
        counted and the lines are kept for the next write or `flush` (which reports it)."""
        if self._pending:
            try:
                self.flush()
            except OSError:
                self.write_errors += 1

    def flush(self) -> None:
        """Write the buffered lines; OSError (kept lines) for the caller to report."""
        if not self._pending:
            return
        day = int(time.time() // DAY_S)
        if self._fd < 0 or day != self._day or self._size >= MAX_FILE_BYTES:
            self._open(day)
        lines, size = self._pending.count(b"\n"), len(self._pending)
        try:
            write_out(self._fd, self._pending)
        finally:
            written = size - len(self._pending)
            self._size += written
            if not self._pending:
                self.lines_written += lines

    def _open(self, day: int) -> None:
        self.close()
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.fromtimestamp(day * DAY_S, dt.UTC).strftime("%Y%m%d")
        index = 0
        while True:
            suffix = f"-{index}" if index else ""
            path = self.folder / f"{self.prefix}-{stamp}-{self.writer}{suffix}.jsonl"
            if not path.exists() or path.stat().st_size < MAX_FILE_BYTES:
                break
            index += 1
        self._fd = open_append(path)
        self._day = day
        self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def files(self) -> list[Path]:
        """Every process's files of this log."""
        return sorted(self.folder.glob(f"{self.prefix}-*.jsonl"))

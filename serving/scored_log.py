"""The scored-event log: one JSON line per scored event, for the shadow-comparison report.

Files are `SENTINEL_HOME/scored/scored-YYYYMMDD[-N].jsonl`, rotated by UTC day and by size.
Lines are buffered and flushed by size, by age (the service flushes every second) and on
shutdown, so the request path only appends to a list.
"""

import datetime as dt
from pathlib import Path
from typing import Any

import orjson

MAX_FILE_BYTES = 64 * 1024 * 1024
FLUSH_LINES = 1_000


class ScoredLog:
    def __init__(self, folder: Path, prefix: str = "scored") -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self._buffer: list[bytes] = []
        self.lines_written = 0

    def append(self, record: dict[str, Any]) -> None:
        self._buffer.append(orjson.dumps(record))  # NaN and inf are written as null
        if len(self._buffer) >= FLUSH_LINES:
            self.flush()

    def _target(self) -> Path:
        day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        index = 0
        while True:
            suffix = f"-{index}" if index else ""
            path = self.folder / f"{self.prefix}-{day}{suffix}.jsonl"
            if not path.exists() or path.stat().st_size < MAX_FILE_BYTES:
                return path
            index += 1

    def flush(self) -> None:
        if not self._buffer:
            return
        lines = self._buffer
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._target().open("ab") as f:
            f.write(b"\n".join(lines) + b"\n")
        self._buffer = []  # only once written: a failed write keeps them for the next try
        self.lines_written += len(lines)

    def files(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.prefix}-*.jsonl"))

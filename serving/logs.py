"""Structured service logs: one JSON object per line, an `event` name plus ids and counts.

Nothing from a request body is ever logged (no card, merchant or device ids, no amounts):
callers pass only what `log_event` is given explicitly, and the error paths log an
exception's type, never its message. A small `logging.Formatter` over orjson (already a
dependency) instead of python-json-logger: this is all the formatting the service needs.
"""

import datetime as dt
import logging
import sys
from typing import Any

import orjson

LOGGER = "sentinel"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        return orjson.dumps(doc, default=str).decode()


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log `event` with `fields` as top-level JSON keys (ids and numbers only)."""
    logger.log(level, event, extra={"fields": fields})


def configure(level: str = "info") -> None:
    """JSON lines on stderr for the `sentinel` loggers, once per process."""
    root = logging.getLogger(LOGGER)
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False

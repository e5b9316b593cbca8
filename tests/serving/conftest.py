"""Fixtures shared by the serving tests."""

import io
import logging
from collections.abc import Iterator

import pytest

from serving.logs import JsonFormatter


@pytest.fixture
def sentinel_logs() -> Iterator[io.StringIO]:
    """What the `sentinel` loggers write at INFO and above, as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("sentinel")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)

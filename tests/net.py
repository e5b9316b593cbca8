"""Loopback helpers for tests that start real servers."""

import socket

from sentinel_dagster.stack import answers

__all__ = ["answers", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

"""Loopback helpers for tests that start real servers."""

import socket
import subprocess
import sys
import time
from pathlib import Path

from sentinel_dagster.cli.stack import answers

__all__ = ["answers", "free_port", "start_up"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ROOT = Path(__file__).resolve().parents[1]


def start_up(log: Path, ui: int, api: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`sentinel up` on these ports, its output in `log`; returns once its banner is printed
    (the UI and the service answer), failing the test if it exits or takes over 180 s."""
    with log.open("w") as out:
        up = subprocess.Popen(
            [str(Path(sys.executable).parent / "sentinel"), "up", "--ui-port", str(ui),
             "--api-port", str(api)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 180
    while "Ctrl-C here stops everything" not in log.read_text():
        if up.poll() is not None or time.monotonic() > deadline:
            if up.poll() is None:
                up.terminate()
                up.wait(timeout=60)
            raise AssertionError(f"`sentinel up` did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    return up

"""`sentinel up` (what `make run` ends with): the Dagster UI and the service answer on
127.0.0.1, and Ctrl-C stops all of it."""

import os
import signal
from pathlib import Path

import pytest

from serving.registry import Registry
from tests.net import answers, free_port, start_up
from tests.serving.bundles import publish_small

ROOT = Path(__file__).resolve().parents[2]


def processes_of(home: Path) -> list[str]:
    """Live processes (not zombies) started for this SENTINEL_HOME: their environment
    names its Dagster home."""
    marker = f"DAGSTER_HOME={home / 'dagster'}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if marker in environ.split(b"\0") and state != "Z" and int(entry.name) != os.getpid():
            found.append(f"{entry.name}: {command[:120]}")
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_serves_the_ui_and_the_service_and_a_signal_stops_all_of_it(
    sentinel_home: Path, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    champion, _ = publish_small(Registry(sentinel_home / "registry"), seed=1)
    ui, api = free_port(), free_port()
    log = tmp_path / "up.log"
    up = start_up(log, ui, api, os.environ.copy())
    try:
        assert answers(f"http://127.0.0.1:{ui}/server_info")
        assert answers(f"http://127.0.0.1:{api}/ready")
        assert processes_of(sentinel_home)  # the UI, daemon, code server and service
        up.send_signal(stop_signal)
        up.wait(timeout=60)
    finally:
        if up.poll() is None:  # SIGTERM stops the children too; SIGKILL would orphan them
            up.terminate()
            up.wait(timeout=60)
    output = log.read_text()
    assert up.returncode == 0, output[-3000:]
    assert f"Dagster UI (schedules and sensors running): http://127.0.0.1:{ui}" in output
    assert f"scoring service: http://127.0.0.1:{api}" in output
    assert "stopped" in output
    # The daemon's and the servers' chatter is in their logs, not in the terminal.
    dagster_log = sentinel_home / "logs" / "dagster.log"
    assert f"logs of both: {dagster_log}, {sentinel_home / 'logs' / 'service.log'}" in output
    assert "dagster" in dagster_log.read_text().lower()  # the webserver and daemon started
    assert "Warning" not in output and " - dagster - " not in output, output[-3000:]
    assert not answers(f"http://127.0.0.1:{ui}/server_info")
    assert not answers(f"http://127.0.0.1:{api}/ready")
    assert champion in (sentinel_home / "registry" / "champion").read_text()
    # Nothing is left behind: `dagster dev`'s code server once outlived it for minutes.
    assert processes_of(sentinel_home) == []

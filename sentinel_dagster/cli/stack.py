"""`sentinel up` (the end of `make run`): the Dagster webserver and daemon (`dg dev`)
and the scoring service (`sentinel serve`), as child processes on 127.0.0.1, stopped together.

Each child runs in its own process group, so stopping it also stops what it started
(`dg dev` runs a webserver, a daemon and a code server). Their output goes to
`SENTINEL_HOME/logs/<child>.log`, appended: the daemon logs every sensor tick, which in a
terminal buries what the user needs to see; a child that stops is quoted from its log.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sentinel_dagster.core import paths

ROOT = Path(__file__).resolve().parents[2]  # the repository
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Stack:
    ui_url: str
    api_url: str
    processes: dict[str, subprocess.Popen[bytes]]
    home: Path

    def logs(self) -> list[Path]:
        return [paths.log_path(self.home, name) for name in self.processes]

    def exited(self, name: str) -> str:
        """`name` stopped: how, and the end of its log."""
        log = paths.log_path(self.home, name)
        lines = []
        if log.exists():  # its end only: the log is appended to for as long as it lives
            with log.open("rb") as f:
                f.seek(max(0, log.stat().st_size - 16_384))
                lines = f.read().decode(errors="replace").splitlines()[-15:]
        tail = "".join(f"\n  | {line}" for line in lines)
        return f"{name} exited with code {self.processes[name].returncode} ({log}){tail}"


def commands(ui_port: int, api_port: int) -> dict[str, list[str]]:
    bin_dir = Path(sys.executable).parent
    return {
        # The dg project's definitions (pyproject.toml [tool.dg]: sentinel_dagster/defs).
        "dagster": [str(bin_dir / "dg"), "dev", "--host", "127.0.0.1", "--port", str(ui_port)],
        # The shipped command, as users run it and `make bench` measures it.
        # (uvicorn's own start-up lines quiet; the service's JSON log as configured)
        "service": [str(bin_dir / "sentinel"), "serve", "--host", "127.0.0.1",
                    "--port", str(api_port), "--server-log-level", "warning"],
    }  # fmt: skip


def start(home: Path, ui_port: int, api_port: int) -> Stack:
    env = {
        **os.environ,
        "SENTINEL_HOME": str(home),
        "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),  # dg runs in this venv
        "DAGSTER_HOME": str(paths.dagster_home(home)),
        "GX_ANALYTICS_ENABLED": "False",
    }
    stack = Stack(f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{api_port}", {}, home)
    try:
        for name, command in commands(ui_port, api_port).items():
            log = paths.log_path(home, name)
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as out:  # the child keeps its own descriptor
                stack.processes[name] = subprocess.Popen(
                    command, cwd=ROOT, env=env, start_new_session=True,
                    stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
    except BaseException:  # a failed start (or Ctrl-C) stops what did start
        stop(stack)
        raise
    return stack


def banner(stack: Stack) -> list[str]:
    """What `sentinel up` says once everything answers, in one block."""
    logs = ", ".join(str(log) for log in stack.logs())
    return [
        "Sentinel-Stream is running; Ctrl-C here stops everything.",
        f"  Dagster UI (schedules and sensors running): {stack.ui_url}",
        f"  scoring service: {stack.api_url}  (API docs {stack.api_url}/docs, "
        f"models {stack.api_url}/v1/models)",
        f"  logs of both: {logs}",
        f"  try: curl -s -X POST {stack.api_url}/v1/score "
        """-H 'Content-Type: application/json' """
        """-d '{"amount": 120.0, "hour_of_day": 14, "channel_online": 0}'""",
        "  then, in another terminal: sentinel demo",
    ]


def answers(url: str) -> bool:
    """True if a GET of `url` is a 200 within 2 s."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_until_ready(stack: Stack, timeout: float = 180.0) -> str | None:
    """None once the UI and the service answer; else what failed."""
    deadline = time.monotonic() + timeout
    pending = {"dagster": f"{stack.ui_url}/server_info", "service": f"{stack.api_url}/ready"}
    while pending and time.monotonic() < deadline:
        for name, url in list(pending.items()):
            if stack.processes[name].poll() is not None:
                return stack.exited(name)
            if answers(url):
                del pending[name]
        time.sleep(0.5)
    return f"{', '.join(pending)} not answering after {timeout:.0f}s" if pending else None


def stop(stack: Stack) -> None:
    """SIGINT to each process group (what Ctrl-C in a terminal does), then SIGKILL; then
    every descendant still alive, wherever it went (the code server `dg dev` starts runs in a
    session of its own and outlived its parent for minutes), is stopped too."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # already stopping: let it finish
        signal.signal(signum, signal.SIG_IGN)
    # Noted before anything stops: an orphan is re-parented to init and its tree is lost.
    family: dict[int, str] = {}
    for process in stack.processes.values():
        if process.returncode is None:  # a reaped leader's pid may belong to another process
            family |= descendants(process.pid)
    for process in stack.processes.values():
        _signal_group(process, signal.SIGINT)  # even if the leader exited: its group may not
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in stack.processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
    stop_all(family, max(deadline, time.monotonic() + 5.0))


def _stat(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name: [state, ppid, ...], None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its start time (so that a recycled pid is never
    taken for it), from /proc: Linux; by hand, as psutil would be a compiled dependency
    for one walk."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(entry.name)
        if fields is not None and len(fields) > 19:
            children.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child, started in children.get(todo.pop(), []):
            if child not in found:
                found[child] = started
                todo.append(child)
    return found


def alive(pid: int, started: str) -> bool:
    """True if that very process (same start time) runs and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and len(fields) > 19 and fields[19] == started and fields[0] != "Z"


def stop_all(processes: dict[int, str], deadline: float) -> None:
    """SIGTERM to those of `processes` (pid: start time) still alive, SIGKILL to any left
    at `deadline`."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid, started in processes.items():
            if alive(pid, started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        while any(alive(p, s) for p, s in processes.items()) and time.monotonic() < deadline:
            time.sleep(0.1)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(process.pid, signum)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt from here on. Installed explicitly: a shell
    starts background jobs with SIGINT ignored, and `kill` should stop the stack too."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)


def wait_for_exit(stack: Stack) -> str:
    """Block until a child exits; return which one and how."""
    while True:
        for name, process in stack.processes.items():
            if process.poll() is not None:
                return stack.exited(name)
        time.sleep(0.5)

"""Kill -9 loses no answered event: the state journal, background snapshots and recovery
(serving/journal.py), in process and against a real server killed with SIGKILL."""

import datetime as dt
import http.client
import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.feature_engine import EngineConfig, FeatureEngine
from serving.features import FEATURE_NAMES
from serving.journal import Journal, Persistence, replay, segment_name, segments
from serving.registry import Registry
from serving.scored_log import ScoredLog
from serving.settings import ServiceSettings
from serving.timeparse import parse_event_time
from tests.net import free_port
from tests.serving.bundles import publish_small

ROOT = Path(__file__).resolve().parents[2]
NAN = math.nan
T0 = 1_767_268_800.0  # 2026-01-01T12:00:00Z
Call = tuple[str, tuple[Any, ...]]


def _engine() -> FeatureEngine:
    return FeatureEngine(config=EngineConfig(features=ServiceSettings().feature_set()))


def _same(a: float | None, b: float | None) -> bool:
    """Equal, NaN (or null: how JSON carries NaN) equal to NaN."""
    a_nan = a is None or (isinstance(a, float) and math.isnan(a))
    b_nan = b is None or (isinstance(b, float) and math.isnan(b))
    return a_nan == b_nan and (a_nan or a == b)


def _same_vector(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))


def _stream(seed: int, n: int) -> list[Call]:
    """Events (some late, some too late, some retried) and labels (with or without the
    event's ids, frauds and not, unknown ids), as the engine receives them."""
    rng = random.Random(seed)
    cards = [f"card-{i}" for i in range(25)]
    merchants = [f"merchant-{i}" for i in range(8)]
    t, events, calls = T0, [], []
    for i in range(n):
        r = rng.random()
        if r < 0.05 and events:  # a retry: the same call again
            calls.append(("e", rng.choice(events[-40:])))
        elif r < 0.13 and events:
            txn, te, card, merchant = rng.choice(events)[:4]
            label_time = max(t, te) + rng.uniform(0, 3_600)
            if rng.random() < 0.5:
                args = (txn, rng.random() < 0.8, label_time, card, merchant, te)
            elif rng.random() < 0.8:
                args = (txn, True, label_time, None, None, None)  # attributed by its id
            else:
                args = (f"unknown-{i}", True, label_time, None, None, None)
            calls.append(("l", args))
        else:
            t += rng.expovariate(1 / 40)
            late = rng.random() < 0.12
            te = t - rng.uniform(0, 600) if late else t  # beyond 300 s: too late
            located = rng.random() < 0.7
            args = (
                f"txn-{i:05d}", te, rng.choice(cards), rng.choice(merchants),
                round(rng.lognormvariate(3.5, 1.0), 2),
                rng.choice([None, "pos", "online", "atm"]),
                rng.choice([None, "dev-a", "dev-b", "dev-c"]),
                rng.uniform(-60, 60) if located else NAN,
                rng.uniform(-150, 150) if located else NAN,
                rng.choice([None, "grocery", "electronics", "travel"]),
            )  # fmt: skip
            events.append(args)
            calls.append(("e", args))
    return calls


def _feed(engine: FeatureEngine, calls: list[Call], journal: Journal | None = None) -> None:
    """What the service does: an event is journaled, then processed; a label is journaled
    once accepted. The journal is written out per "request" of one to five calls."""
    rng = random.Random(len(calls))
    for i, (kind, args) in enumerate(calls):
        if kind == "e":
            if journal is not None:
                journal.event(args)
            engine.process(*args)
        else:
            engine.apply_label(*args)
            if journal is not None:
                journal.label(args)
        if journal is not None and (rng.random() < 0.4 or i == len(calls) - 1):
            journal.write()


def _probes(clock: float) -> list[tuple[Any, ...]]:
    rng = random.Random(99)
    return [
        (f"probe-{i}", clock + 1 + i, f"card-{i % 25}", f"merchant-{i % 8}", 50.0 + i,
         "online", "dev-a", 10.0, 20.0, "grocery")
        for i in range(40)
    ] + [(f"probe-late-{i}", clock - rng.uniform(0, 900), f"card-{i}", "merchant-1", 5.0,
          None, None, NAN, NAN, None) for i in range(10)]  # fmt: skip


def _assert_same_state(recovered: FeatureEngine, reference: FeatureEngine) -> None:
    assert recovered.clock == reference.clock
    assert recovered.stats() == reference.stats()
    for table in ("card", "merchant", "txn", "label"):
        assert set(recovered.store.table(table)) == set(reference.store.table(table)), table
    for probe in _probes(reference.clock):
        got, want = recovered.process(*probe), reference.process(*probe)
        assert _same_vector(got, want), probe[0]
        assert recovered.last_state == reference.last_state


def _crash(journal: Journal) -> None:
    """What kill -9 leaves: what was written stays; the lock and descriptors go."""
    journal.unlock()
    for fd in journal.sync_fds():
        os.close(fd)
    if journal._fd >= 0:
        os.close(journal._fd)
        journal._fd = -1


def _wait_reaped(persistence: Persistence) -> bool:
    outcome = persistence.reap(block=True)
    assert outcome is not None
    return outcome


def _persistence(engine: FeatureEngine, folder: Path, path: Path) -> Persistence:
    journal = Journal(folder, fsync_ms=1000)
    assert journal.lock()
    journal.start(engine.journal_next or 0)
    return Persistence(engine, journal, path, every_events=10**9, interval_s=1e9)


def test_snapshots_plus_journal_replay_equal_an_uninterrupted_engine(tmp_path: Path) -> None:
    calls = _stream(seed=3, n=4_000)
    reference = _engine()
    _feed(reference, calls)
    folder, path = tmp_path / "journal", tmp_path / "feature_state.pkl"
    engine = _engine()
    durable = _persistence(engine, folder, path)
    part = len(calls) // 4

    _feed(engine, calls[:part], durable.journal)
    assert durable.start_snapshot() and _wait_reaped(durable)  # committed: old segments go
    first_mark = durable.journal.number
    assert [n for n, _ in segments(folder)] == [first_mark]
    assert pickle.loads(path.read_bytes())["extra"]["journal_next"] == first_mark

    _feed(engine, calls[part : 2 * part], durable.journal)
    assert durable.start_snapshot() and _wait_reaped(durable)
    _feed(engine, calls[2 * part : 3 * part], durable.journal)
    # A snapshot the process dies before committing the deletion of: its child finished, the
    # older segments are still there and must not be replayed twice.
    assert durable.start_snapshot()
    assert durable.child is not None
    os.waitpid(durable.child.pid, 0)
    durable.child = None
    _feed(engine, calls[3 * part :], durable.journal)
    assert len(segments(folder)) == 2
    # A crash in the middle of a write: half a line, never answered.
    with (folder / segment_name(durable.journal.number)).open("ab") as f:
        f.write(b'["e","txn-torn",1767268800.0,"card-1","merch')
    _crash(durable.journal)

    recovered = FeatureEngine.restore(path, ServiceSettings().feature_set())
    assert recovered.journal_next is not None
    done = replay(recovered, folder, recovered.journal_next)
    assert done.torn == 1 and done.skipped == 0 and done.segments == 1
    assert done.lines == len(calls) - 3 * part
    _assert_same_state(recovered, reference)


def test_a_crash_before_any_snapshot_replays_the_whole_journal(tmp_path: Path) -> None:
    calls = _stream(seed=5, n=1_500)
    reference = _engine()
    _feed(reference, calls)
    folder = tmp_path / "journal"
    engine = _engine()
    durable = _persistence(engine, folder, tmp_path / "feature_state.pkl")
    _feed(engine, calls[:700], durable.journal)
    _crash(durable.journal)
    # The next process continues in a new segment and is killed too.
    recovered = _engine()
    assert replay(recovered, folder, 0).lines == 700
    durable = _persistence(recovered, folder, tmp_path / "feature_state.pkl")
    assert durable.journal.number == 1
    _feed(recovered, calls[700:], durable.journal)
    _crash(durable.journal)

    again = _engine()
    done = replay(again, folder, 0)
    assert (done.segments, done.lines, done.torn) == (2, len(calls), 0)
    _assert_same_state(again, reference)


def test_graceful_close_snapshots_and_drops_the_journal(tmp_path: Path) -> None:
    calls = _stream(seed=7, n=1_200)
    reference = _engine()
    _feed(reference, calls)
    folder, path = tmp_path / "journal", tmp_path / "feature_state.pkl"
    engine = _engine()
    durable = _persistence(engine, folder, path)
    _feed(engine, calls[:600], durable.journal)
    durable.close()
    assert segments(folder) == []

    restored = FeatureEngine.restore(path, ServiceSettings().feature_set())
    assert replay(restored, folder, restored.journal_next or 0).lines == 0
    durable = _persistence(restored, folder, path)
    assert durable.journal.number == restored.journal_next  # numbering continues after it
    _feed(restored, calls[600:], durable.journal)
    _crash(durable.journal)
    again = FeatureEngine.restore(path, ServiceSettings().feature_set())
    assert replay(again, folder, again.journal_next or 0).lines == len(calls) - 600
    _assert_same_state(again, reference)


def test_a_failed_snapshot_deletes_nothing(tmp_path: Path, monkeypatch) -> None:
    folder, path = tmp_path / "journal", tmp_path / "feature_state.pkl"
    engine = _engine()
    durable = _persistence(engine, folder, path)
    calls = _stream(seed=9, n=300)
    _feed(engine, calls, durable.journal)

    def broken(self: FeatureEngine, target: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(FeatureEngine, "snapshot", broken)  # the forked child inherits it
    assert durable.start_snapshot()
    assert _wait_reaped(durable) is False
    assert durable.failures == 1
    assert not path.exists()
    assert [n for n, _ in segments(folder)] == [0, 1]  # rolled over, nothing deleted
    assert not list(tmp_path.glob("feature_state.pkl.bg-*"))
    _crash(durable.journal)
    recovered = _engine()
    assert replay(recovered, folder, 0).lines == len(calls)


def test_a_hung_snapshot_child_is_killed_and_the_next_snapshot_can_start(
    tmp_path: Path, monkeypatch
) -> None:
    folder, path = tmp_path / "journal", tmp_path / "feature_state.pkl"
    engine = _engine()
    durable = _persistence(engine, folder, path)
    _feed(engine, _stream(seed=5, n=100), durable.journal)

    def hangs(self: FeatureEngine, target: Path) -> None:
        time.sleep(3_600)

    monkeypatch.setattr(FeatureEngine, "snapshot", hangs)  # the forked child inherits it
    assert durable.start_snapshot()
    started = durable.child.started
    durable.tick(now=lambda: started + durable.child_timeout_s / 2)
    assert durable.child is not None  # still within its time
    durable.tick(now=lambda: started + durable.child_timeout_s + 1)  # an injected clock
    assert durable.child is None and durable.failures == 1
    assert not list(tmp_path.glob("feature_state.pkl.bg-*"))
    monkeypatch.undo()
    _feed(engine, _stream(seed=6, n=10), durable.journal)
    assert durable.start_snapshot()
    assert _wait_reaped(durable) is True


def test_a_second_process_does_not_get_the_journal(tmp_path: Path) -> None:
    first, second = Journal(tmp_path / "j"), Journal(tmp_path / "j")
    assert first.lock()
    assert not second.lock()
    first.unlock()
    assert second.lock()
    second.unlock()


def test_scored_log_lines_are_written_before_returning_one_file_per_writer(
    tmp_path: Path,
) -> None:
    one = ScoredLog(tmp_path, writer="hostA-1")
    one.append({"transaction_id": "a", "score": NAN})
    one.append({"transaction_id": "b"})
    one.write()
    (path,) = tmp_path.glob("scored-*.jsonl")
    assert path.name.endswith("-hostA-1.jsonl")
    assert [json.loads(line)["transaction_id"] for line in path.read_text().splitlines()] == [
        "a",
        "b",
    ]
    with path.open("a") as f:  # a killed writer of the same name left half a line
        f.write('{"transaction_id": "c", "sco')
    again = ScoredLog(tmp_path, writer="hostA-1")
    again.append({"transaction_id": "d"})
    again.write()
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1]) == {"transaction_id": "d"}
    other = ScoredLog(tmp_path, writer="hostB-2")
    other.append({"transaction_id": "e"})
    other.write()
    assert len(list(tmp_path.glob("scored-*.jsonl"))) == 2
    from sentinel_dagster.shadow.shadow_report import read_log

    assert sorted(read_log(tmp_path, "scored")["transaction_id"]) == ["a", "b", "d", "e"]


def test_the_service_writes_journal_and_logs_before_it_answers(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.service import Service

    publish_small(Registry(tmp_path / "registry"), seed=1)
    settings = ServiceSettings(home=tmp_path)
    now = time.time()
    event = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 20.0,
             "event_time": _iso(now - 60), "lat": 48.8}  # fmt: skip
    batch = [event | {"transaction_id": f"t{i}", "event_time": _iso(now - 60 + i)} for i in (2, 3)]
    label = {"transaction_id": "t2", "is_fraud": True, "label_time": _iso(now)}
    journal_dir = tmp_path / "serving" / "journal"
    with TestClient(create_app(settings)) as c:
        first = c.post("/v1/score", json=event)
        assert first.status_code == 200
        assert c.post("/v1/score", json={"amount": 5.0}).status_code == 200  # no card: no state
        assert c.post("/v1/score/batch", json={"events": batch}).status_code == 200
        assert c.post("/v1/feedback", json=label).json()["outcome"] == "applied"
        service: Service = c.app.state.service  # type: ignore[attr-defined]
        assert not service.journal._pending and not service.log._pending  # type: ignore[union-attr]
        ((_, segment),) = segments(journal_dir)
        records = [json.loads(line) for line in segment.read_text().splitlines()]
        # Each event once processed, and its answer, kept for retries, before it is sent.
        assert [(r[0], r[1]) for r in records] == [
            ("e", "t1"), ("a", "t1"), ("e", "t2"), ("e", "t3"), ("a", "t2"), ("a", "t3"),
            ("l", "t2"),
        ]  # fmt: skip
        assert records[0][8:10] == [48.8, None]  # a missing coordinate (NaN) is null
        assert records[1][3] == {k: v for k, v in first.json().items() if k != "state"}
        scored = [json.loads(line)["transaction_id"]
                  for f in (tmp_path / "scored").glob("scored-*.jsonl")
                  for line in f.read_text().splitlines()]  # fmt: skip
        assert scored == ["t1", None, "t2", "t3"]
        (feedback,) = (tmp_path / "scored").glob("feedback-*.jsonl")
        assert json.loads(feedback.read_text())["transaction_id"] == "t2"
        # Another process (here: another Service) on the same home gets no journal.
        other = Service(settings)
        assert other.journal_refused and other.persistence is None
        assert other.engine.stats()["events"] == 3  # it starts from the journal, read-only
        other.shutdown()  # and writes no snapshot
        assert not (tmp_path / "serving" / "feature_state.pkl").exists()
    assert segments(journal_dir) == []  # the final snapshot holds it all
    restored = FeatureEngine.restore(tmp_path / "serving" / "feature_state.pkl")
    assert restored.stats()["events"] == 3 and restored.stats()["labels_applied"] == 1


# -- a real server, killed with SIGKILL ---------------------------------------------------------


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


class Server:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = home / f"server-{self.port}.log"
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "warning"],
                cwd=ROOT, env={**os.environ, "SENTINEL_HOME": str(home), **env},
                stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        self.conn: http.client.HTTPConnection | None = None
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                status, _ = self.request("GET", "/ready")
                if status == 200:
                    return
            except OSError:
                self.conn = None
            time.sleep(0.2)
        raise AssertionError(f"not ready: {self.log.read_text()}")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = None if body is None else json.dumps(body)
        self.conn.request(method, path, data, {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"null")

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop(signal.SIGKILL)


def _traffic(now: float, n: int) -> list[tuple[str, dict[str, Any]]]:
    """Events of 20 cards (a few late), and now and then a label for an earlier event."""
    rng = random.Random(17)
    base = now - 1_200
    out: list[tuple[str, dict[str, Any]]] = []
    sent: list[dict[str, Any]] = []
    for i in range(n):
        t = base + 3 * i
        if rng.random() < 0.1:
            t -= rng.uniform(0, 250)  # late, within the allowed lateness
        event: dict[str, Any] = {
            "transaction_id": f"txn-{i:04d}", "card_id": f"card-{i % 20}",
            "merchant_id": f"merchant-{rng.randrange(6)}", "amount": round(rng.uniform(1, 400), 2),
            "event_time": _iso(t), "channel": rng.choice(["pos", "online"]),
            "device_id": rng.choice(["d1", "d2", None]), "merchant_category": "grocery",
        }  # fmt: skip
        if rng.random() < 0.6:
            event |= {"lat": round(rng.uniform(40, 50), 4), "lon": round(rng.uniform(0, 10), 4)}
        out.append(("event", event))
        sent.append(event)
        if i % 25 == 24:
            target = rng.choice(sent[-20:])
            target_t = parse_event_time(target["event_time"], "event_time")
            label = {
                "transaction_id": target["transaction_id"], "is_fraud": True,
                "label_time": _iso(target_t + 60), "card_id": target["card_id"],
                "merchant_id": target["merchant_id"], "event_time": target["event_time"],
            }  # fmt: skip
            out.append(("label", label))
    return out


def _feed_reference(engine: FeatureEngine, kind: str, body: dict[str, Any]) -> None:
    if kind == "event":
        engine.process_event(body)
    else:
        engine.apply_label(
            body["transaction_id"], body["is_fraud"],
            parse_event_time(body["label_time"], "label_time"), body["card_id"],
            body["merchant_id"], parse_event_time(body["event_time"], "event_time"),
        )  # fmt: skip


def _send(server: Server, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    path = "/v1/score?explain=true" if kind == "event" else "/v1/feedback"
    status, answer = server.request("POST", path, body)
    assert status == 200, answer
    return answer


def _without_state(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer as a retry gets it back: `features` show the state as it is now."""
    return {k: v for k, v in answer.items() if k not in ("state", "features")}


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_kill_9_loses_no_answered_event(tmp_path: Path, servers: list[Server]) -> None:
    home = tmp_path / "home"
    publish_small(Registry(home / "registry"), seed=1)
    env = {"SENTINEL_SNAPSHOT_EVERY_EVENTS": "100", "SENTINEL_RELOAD_INTERVAL_S": "1"}
    # 150 events, then 40: whenever the one snapshot is taken (at >= 100 lines, on a
    # background tick), fewer than 100 lines follow it, so no second one is taken.
    traffic = _traffic(time.time(), 190)
    split = next(i for i, (kind, body) in enumerate(traffic) if body.get("transaction_id") ==
                 "txn-0150" and kind == "event")  # fmt: skip
    reference = _engine()
    answered: list[str] = []
    answers: dict[str, dict[str, Any]] = {}
    journal_dir, snapshot = home / "serving" / "journal", home / "serving" / "feature_state.pkl"

    first = Server(home, env)
    servers.append(first)
    for kind, body in traffic[:split]:
        answer = _send(first, kind, body)
        _feed_reference(reference, kind, body)
        if kind == "event":
            answered.append(body["transaction_id"])
            answers[body["transaction_id"]] = answer
            assert answer["features"]["txn_count_10m"] is not None
    # More than SENTINEL_SNAPSHOT_EVERY_EVENTS lines: a background snapshot is taken and,
    # once committed, the segments it holds are deleted.
    _wait_for(lambda: snapshot.exists() and not (journal_dir / segment_name(0)).exists())
    _wait_for(lambda: bool(first.events("feature_state_saved")))
    (saved,) = first.events("feature_state_saved")
    assert saved["mode"] == "background" and saved["journal_segments_dropped"] == 1
    assert 100 <= saved["events"] <= 150

    phase_two = traffic[split:]
    for kind, body in phase_two:  # fewer lines than a snapshot needs: all in the journal
        answer = _send(first, kind, body)
        _feed_reference(reference, kind, body)
        if kind == "event":
            answered.append(body["transaction_id"])
            answers[body["transaction_id"]] = answer
    first.stop(signal.SIGKILL)  # right after the last acknowledged answer
    assert first.process.returncode == -signal.SIGKILL

    second = Server(home, env)
    servers.append(second)
    (restored,) = second.events("feature_state_restored")
    assert restored["snapshot_events"] == saved["events"]
    assert restored["journal_lines"] >= len(phase_two)  # and phase one's after the snapshot
    assert restored["torn_lines"] == restored["skipped_lines"] == 0
    assert restored["events"] == 190
    assert "card-" not in second.log.read_text()  # ids and counts only

    last_t = max(parse_event_time(b["event_time"], "t") for k, b in traffic if k == "event")
    for i in range(20):  # each card's next payment reads the state an unbroken run has
        probe = {
            "transaction_id": f"probe-{i}", "card_id": f"card-{i}", "merchant_id": "merchant-0",
            "amount": 25.0, "event_time": _iso(last_t + 10 + i), "channel": "online",
        }  # fmt: skip
        answer = _send(second, "event", probe)
        want = reference.process_event(probe)
        got = [answer["features"][name] for name in FEATURE_NAMES]
        assert answer["features"]["txn_count_10m"] == want[FEATURE_NAMES.index("txn_count_10m")]
        assert _same_vector(got, want), probe["transaction_id"]
        answered.append(probe["transaction_id"])

    # Retries of answered events, from the snapshot and from the journal only, get their
    # original answers back (not logged again); a changed body is refused.
    sent = {body["transaction_id"]: body for kind, body in traffic if kind == "event"}
    for txn in ("txn-0005", "txn-0180"):
        again = _send(second, "event", sent[txn])
        assert again["state"] == "duplicate"
        assert _without_state(again) == _without_state(answers[txn]), txn
        status, refused = second.request("POST", "/v1/score", sent[txn] | {"amount": 0.5})
        assert status == 409 and refused["detail"][0]["loc"] == ["body", "transaction_id"]

    second.stop()  # graceful: a final snapshot, the journal dropped
    assert second.process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM
    assert second.events("feature_state_saved")[-1]["events"] == 190 + 20 + 2  # + retries
    assert segments(journal_dir) == []
    scored = home / "scored"
    files = sorted(scored.glob("scored-*.jsonl"))
    assert len(files) == 2  # one per process, never shared
    logged = Counter(
        json.loads(line)["transaction_id"] for f in files for line in f.read_text().splitlines()
    )
    assert logged == Counter(answered)  # every acknowledged event exactly once
    labels = [
        json.loads(line)["transaction_id"]
        for f in scored.glob("feedback-*.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert labels == [body["transaction_id"] for kind, body in traffic if kind == "label"]

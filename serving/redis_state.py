"""The online state on Redis, shared by every worker and host (`SENTINEL_REDIS_URL`).

Design: each event is one Lua script (`redis_event.lua`), which Redis runs atomically. The
script returns the state as it was before the event — the card's recent payments and known
frauds, and for the merchant only counts (payments at each window bound, known frauds per
window, distinct cards in the last hour) — and then adds the event. The worker computes
the vector from that state with the in-process engine's own code (`feature_vector`).
Redis orders the scripts, so any number of workers compute exactly what one in-process
engine fed the events in that order computes, and no update is lost: there is nothing to
lock, retry or merge.

Bytes moved per event: a card's payments of the last 30 days (a few KB for a busy card);
for a merchant a dozen integers whatever its volume — its counts come from sorted-set
ranks (`ZCOUNT`, O(log n)) and its last hour's distinct cards from a per-merchant tally
slid forward by each in-order payment, so a merchant with thousands of payments an hour
costs the same per event as a quiet one. A batch is one pipelined round trip.

Answers kept for retries (`remember_answers`) are not written on their own: they are queued
and sent ahead of the next call's scripts in the same pipeline (see `remember_answers`).

Durability is Redis's own (run it with `appendonly yes` to survive a restart); keys expire
a day after the longest window could read them, measured on Redis's wall clock. A single
Redis primary: each script touches a card's and a merchant's keys, which Redis Cluster
would place on different shards.
"""

import contextlib
import logging
import math
import os
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from serving.feature_engine import (
    COUNTERS,
    DAY,
    NAN,
    TRIM_SLACK_S,
    EngineConfig,
    EventArgs,
    FeatureEngine,
    KnownFrauds,
    RefusedEvent,
    VectorPlan,
    label_before_event,
)
from serving.logs import log_event
from serving.retries import ConflictingEvent, Processed, Remembered, changed_fields, check_call
from serving.state_store import StateStoreError
from serving.timeparse import iso

log = logging.getLogger("sentinel.serving")

_HOUR = 3600.0
KEY_SLACK_S = DAY  # keys outlive the longest window by this much (Redis's wall clock)


def store_failure(exc: Exception) -> str:
    """What a Redis failure is reported as: its type only (a message may quote a key)."""
    return f"the Redis state store failed: {type(exc).__name__}"


@contextlib.contextmanager
def unavailable_as_store_error() -> Iterator[None]:
    """Redis down, slow or refusing: the service answers 503 naming the store."""
    try:
        yield
    except redis.RedisError as exc:
        raise StateStoreError(store_failure(exc)) from None


def log_answers_not_kept(count: int, error: str) -> None:
    """The default report of queued answers Redis did not keep (the service also counts
    them): how many and why, never their ids or contents (serving/logs.py)."""
    log_event(log, logging.WARNING, "answers_not_kept", answers=count, error=error)


def _script(name: str) -> str:
    return resources.files("serving").joinpath(name).read_text()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisFeatureEngine(FeatureEngine):
    """`FeatureEngine`'s interface over state kept in Redis (see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        config: EngineConfig | None = None,
        prefix: str = "",
        max_clock_skew_s: float = 300.0,
    ) -> None:
        super().__init__(config=config)
        self.client = client
        self.prefix = prefix
        self.counted = VectorPlan(self.config.features, merchant_counted=True)
        self._counted_vector = self.counted.vector
        self._event_script = client.register_script(_script("redis_event.lua"))
        self._label_script = client.register_script(_script("redis_label.lua"))
        reach = self._reach + self._lateness + TRIM_SLACK_S + KEY_SLACK_S
        self._ttl_ms = str(int(reach * 1000))
        self._txn_ttl_ms = str(int((self._dedup_window + self._lateness + KEY_SLACK_S) * 1000))
        self._card_reach = self.counted.card_reach_s
        self.last_seq = 0
        self._caps = ("0", "0")  # no cap until `limit_state`
        self.max_clock_skew_s = max_clock_skew_s
        # Answers `remember_answers` queued, in call order: (key, answer) for the next round
        # trip, and when the oldest of them was queued (`monotonic`; tests inject a clock).
        self._answers: list[tuple[str, bytes]] = []
        self._answers_since = 0.0
        self.monotonic: Callable[[], float] = time.monotonic
        # Told how many queued answers Redis did not keep, and why (the service counts them
        # in `answers_not_kept`); it is never raised to the call that carried them.
        self.answers_not_kept: Callable[[int, str], None] = log_answers_not_kept

    @classmethod
    def from_url(
        cls,
        url: str,
        config: EngineConfig | None = None,
        prefix: str = "",
        max_clock_skew_s: float = 300.0,
        timeout_s: float = 0.5,
    ) -> "RedisFeatureEngine":
        """A client that gives up after `timeout_s` without retrying: a hung or unreachable
        Redis becomes a 503 within the timeout, not a stalled worker."""
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, config, prefix, max_clock_skew_s)

    def snapshot(self, path: Any) -> None:  # Redis persists itself (AOF / RDB)
        raise TypeError("the Redis store is persisted by Redis, not snapshotted")

    def unavailable(self) -> str | None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            return f"the Redis state store failed: {type(exc).__name__}"
        return None

    def _shared_counters(self) -> dict[str, int]:
        with unavailable_as_store_error():
            raw = self.client.hgetall(self.prefix + "g")
        return {_text(k): int(v) for k, v in raw.items() if _text(k) != "clock"}

    def event_clock(self) -> float:
        """The latest event time any worker sharing this state has seen."""
        with unavailable_as_store_error():
            clock = self.client.hget(self.prefix + "g", "clock")
        return -math.inf if clock is None else float(clock)

    def stats(self) -> dict[str, int]:
        """The counters of every worker sharing this state."""
        counters = self._shared_counters()
        return {name: counters.get(name, 0) for name in ("events", *COUNTERS)}

    def limit_state(self, max_cards: int | None, max_merchants: int | None) -> None:
        """Caps shared by every worker: beyond them the least recently used card or merchant
        (by last event or label time, exactly) is deleted with its keys."""
        self._caps = (str(max_cards or 0), str(max_merchants or 0))

    def state_stats(self) -> dict[str, Any]:
        """Live cards and merchants (used within every window's reach), the caps, evictions
        by every worker, and Redis's own memory figures."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(self.prefix + "cards")
        pipe.zcard(self.prefix + "merchants")
        pipe.info("memory")
        with unavailable_as_store_error():
            cards, merchants, memory = pipe.execute()
        evicted: dict[str, dict[str, int]] = {"card": {}, "merchant": {}}
        for key, n in self._shared_counters().items():
            if key.startswith("evicted:"):
                _, table, reason = key.split(":")
                evicted[table][reason] = n
        limits = {
            table: int(cap) for table, cap in zip(("card", "merchant"), self._caps, strict=True)
        }
        return {
            "store": "redis",
            "cards": cards,
            "merchants": merchants,
            "limits": {table: cap for table, cap in limits.items() if cap},
            "evicted": evicted,
            "redis_used_memory_bytes": memory.get("used_memory"),
            "redis_maxmemory_bytes": memory.get("maxmemory"),
        }

    # -- events -------------------------------------------------------------------------

    def _event_args(self, e: EventArgs, fingerprint: str, batch: str = "") -> list[str]:
        txn_id, t, card_id, merchant_id, amount, _, device_id, lat, lon, _ = e
        bounds, windows = self.counted.merchant.counts(t)
        payload = "\0".join(
            (merchant_id, device_id or "", repr(amount), repr(math.radians(lat)),
             repr(math.radians(lon)))
        )  # fmt: skip
        args = [
            self.prefix, txn_id, repr(t), card_id, merchant_id, payload, repr(amount),
            repr(self._lateness), repr(self._reach), repr(self._dedup_window),
            repr(t - self._card_reach - 1.0), repr(TRIM_SLACK_S), self._ttl_ms,
            self._txn_ttl_ms, repr(t - _HOUR), str(len(bounds)), *map(repr, bounds),
            str(len(windows)),
        ]  # fmt: skip
        for after, until, strict in windows:
            args += [repr(after), repr(until), "1" if strict else "0"]
        return [*args, *self._caps, repr(self.max_clock_skew_s), fingerprint, batch]

    def _vector_from(self, e: EventArgs, reply: list[Any]) -> list[float]:
        txn_id, t, card_id, merchant_id, amount, channel, device_id, lat, lon, category = e
        refused = _text(reply[0])
        if refused == "ahead":  # refused by Redis's clock; nothing was written
            raise ValueError(
                f"event_time: {iso(t)} is more than {self.max_clock_skew_s:g} s ahead of the "
                f"shared state's clock (latest accepted {iso(float(reply[1]))})"
            )
        if refused == "conflict":  # a retry with another body; nothing was written
            seen = (_text(reply[1]), _text(reply[2]), float(reply[3]), _text(reply[4]))
            raise ConflictingEvent(0, txn_id, changed_fields(seen, card_id, merchant_id, t))
        state, clock, entries, cum_before, frauds, fraud_reported, mp, counts, cards1h, seq = reply[
            :10
        ]
        self.last_state = _text(state)
        self.last_answer = reply[10] or None  # a retry's stored answer
        self.last_seq = seq  # this event's place in the order Redis applied all events
        self.clock = max(self.clock, float(clock))
        card = self._card_state()
        card.cum = array("d", [float(cum_before)])
        for i in range(0, len(entries), 2):
            fields = _text(entries[i]).split("\0")
            at = float(entries[i + 1])
            card.ts.append(at)
            card.ids.append(fields[0])
            card.merchants.append(fields[1])
            device = fields[2] or None
            card.devices.append(device)
            if device is not None:
                card.device_times[device] = at
            card.lat.append(float(fields[4]))
            card.lon.append(float(fields[5]))
            card.cum.append(float(fields[6]))
        if frauds:
            known = card.frauds = KnownFrauds()
            for i in range(0, len(frauds), 2):
                label_time = float(_text(frauds[i]).split("\0", 1)[0])
                known.ts.append(float(frauds[i + 1]))
                known.label_ts.append(label_time)
                known.latest_label = max(known.latest_label, label_time)
        if fraud_reported:
            card.fraud_reported_at = float(fraud_reported)
        return self._feature_vector(
            self._counted_vector, card, len(card.ts), t, amount, channel, device_id,
            math.radians(lat), math.radians(lon), category, array("d"), mp, counts, cards1h,
        )  # fmt: skip

    def process(
        self,
        txn_id: str,
        t: float,
        card_id: str,
        merchant_id: str,
        amount: float,
        channel: str | None = None,
        device_id: str | None = None,
        lat: float = NAN,
        lon: float = NAN,
        category: str | None = None,
        fingerprint: str = "",
    ) -> list[float]:
        e: EventArgs = (txn_id, t, card_id, merchant_id, amount, channel, device_id, lat, lon,
                        category)  # fmt: skip
        (reply,) = self._run_events([self._event_args(e, fingerprint)])
        return self._vector_from(e, reply)

    def _run_events(self, scripts: list[list[str]]) -> list[Any]:
        """The event scripts' replies, in one round trip, with the queued answers' `SET`s
        ahead of them in the same pipeline (so a retry among these events finds its answer).
        The `SET`s' own failures are reported to `answers_not_kept`, never raised; when the
        round trip itself fails, the answers it carried are reported too and the call fails
        as before (StateStoreError, a 503).

        The scripts go as plain `EVALSHA`s: a pipeline that registers its scripts asks Redis
        `SCRIPT EXISTS` first, one more round trip. A script Redis does not have (restarted,
        or `SCRIPT FLUSH`) answers NOSCRIPT without running; it is loaded and those events
        are sent again, in order."""
        answers = self._answers
        if not answers and len(scripts) == 1:  # nothing to carry: a bare EVALSHA
            with unavailable_as_store_error():
                return [self._event_script(args=scripts[0])]
        self._answers = []
        pipe = self._answers_pipeline(answers)
        for args in scripts:
            pipe.execute_command("EVALSHA", self._event_script.sha, 0, *args)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:  # the connection: the answers may not have arrived
            if answers:
                self.answers_not_kept(len(answers), store_failure(exc))
            raise StateStoreError(store_failure(exc)) from None
        failed = [r for r in replies[: len(answers)] if isinstance(r, Exception)]
        if failed:
            self.answers_not_kept(len(failed), store_failure(failed[0]))
        replies = replies[len(answers) :]
        again = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if again:
            pipe = self.client.pipeline(transaction=False)
            for i in again:
                self._event_script([], scripts[i], client=pipe)  # loads it if need be
            with unavailable_as_store_error():
                for i, reply in zip(again, pipe.execute(raise_on_error=False), strict=True):
                    replies[i] = reply
        for reply in replies:
            if isinstance(reply, redis.RedisError):
                raise StateStoreError(store_failure(reply))
        return replies

    def process_many(
        self, events: Sequence[EventArgs], fingerprints: Sequence[str] | None = None
    ) -> list[Processed]:
        """Several events in one round trip, applied in order (each sees the ones before).

        A batch's conflicting retries are looked for first (one more round trip), so one
        normally refuses the call before anything is written. Only a conflicting retry sent
        by another worker between that check and the batch's scripts is found by its script
        instead. A script that refuses its event (a conflict, or Redis's clock) marks the
        batch, and the scripts after it skip theirs (`skipped` replies, never read: the
        refusal before them is raised): the events before it were applied (documented), and
        a retry of the whole batch gets their stored answers."""
        if fingerprints is None:
            fingerprints = [""] * len(events)
        if len(events) == 1:
            try:
                vector = self.process(*events[0], fingerprint=fingerprints[0])
            except ConflictingEvent:
                raise
            except ValueError as exc:
                raise RefusedEvent(0, str(exc)) from None
            return [Processed(vector, self.last_state, self.last_answer)]
        if any(fingerprints):
            stored, clock = self._remembered_of(events)
            check_call(events, fingerprints, stored, clock, self._lateness + self._dedup_window)
        batch = os.urandom(8).hex()  # once one script refuses its event, the rest skip theirs
        replies = self._run_events(
            [self._event_args(e, fp, batch) for e, fp in zip(events, fingerprints, strict=True)]
        )
        out = []
        for index, (e, reply) in enumerate(zip(events, replies, strict=True)):
            try:
                vector = self._vector_from(e, reply)
            except ConflictingEvent as exc:  # the events before it were applied (documented)
                raise ConflictingEvent(index, exc.txn_id, exc.changed) from None
            except ValueError as exc:  # the events before it were applied (documented)
                raise RefusedEvent(index, str(exc)) from None
            out.append(Processed(vector, self.last_state, self.last_answer))
        return out

    def _remembered_of(
        self, events: Sequence[EventArgs]
    ) -> tuple[Callable[[str], Remembered | None], float]:
        """The transaction ids of `events` as Redis remembers them, and its clock."""
        ids = list(dict.fromkeys(e[0] for e in events))
        pipe = self.client.pipeline(transaction=False)
        pipe.mget([f"{self.prefix}t:{txn_id}" for txn_id in ids])
        pipe.mget([f"{self.prefix}f:{txn_id}" for txn_id in ids])
        pipe.hget(self.prefix + "g", "clock")
        with unavailable_as_store_error():
            seen, kept, clock = pipe.execute()
        remembered: dict[str, Remembered] = {}
        for txn_id, value, retry in zip(ids, seen, kept, strict=True):
            if value is not None:
                card, merchant, t = _text(value).split("\0")
                at, fingerprint = _text(retry).split("\0", 1) if retry else ("", "")
                remembered[txn_id] = (card, merchant, float(t), fingerprint if at == t else "")
        return remembered.get, -math.inf if clock is None else float(clock)

    def remember_answers(self, answers: Sequence[tuple[str, str, bytes]]) -> None:
        """Queue each answer, to be kept as long as its transaction id (`SET NX`: the first
        one stays; the script deletes it when the id starts a new payment). Nothing is sent
        here: the queue goes ahead of the next call's scripts in the same pipeline (under
        load, no round trip of its own), or with `flush_answers`, in call order.

        Why not one `SET` round trip per call, before the answer is sent: the engine's calls
        block the worker's event loop, and that round trip cost the shipped service on Redis
        25% of its throughput (docs/BENCHMARKS.md, "Idempotent retries"). Why not a writer
        thread: it needs a round trip of its own per batch of answers, and its Python
        (packing, parsing) competes with the event loop for the GIL on the same core, while
        a piggybacked `SET` costs only its bytes in a round trip made anyway. The price: until
        it is written (the next call, or the service's idle flush: `Scorer`), another worker
        or host finds the retry's id but not its answer, and scores it again."""
        if not answers:
            return
        if not self._answers:
            self._answers_since = self.monotonic()
        prefix = self.prefix + "a:"
        self._answers += [(prefix + txn_id, answer) for txn_id, _, answer in answers]

    def _answers_pipeline(self, answers: list[tuple[str, bytes]]) -> redis.client.Pipeline:
        """A pipeline that starts with the answers' `SET NX PX` (as plain commands: cheaper
        to build than `pipe.set`'s keywords, measured)."""
        pipe = self.client.pipeline(transaction=False)
        for key, answer in answers:
            pipe.execute_command("SET", key, answer, "NX", "PX", self._txn_ttl_ms)
        return pipe

    def answers_due_in(self, delay_s: float) -> float | None:
        """Seconds until the oldest queued answer has waited `delay_s` (0 or less: it has);
        None when none is queued."""
        if not self._answers:
            return None
        return self._answers_since + delay_s - self.monotonic()

    def flush_answers(self) -> int:
        """Write the queued answers now, in one round trip; how many were sent. A failure is
        reported to `answers_not_kept` (they are not queued again), never raised."""
        answers, self._answers = self._answers, []
        if not answers:
            return 0
        pipe = self._answers_pipeline(answers)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            self.answers_not_kept(len(answers), store_failure(exc))
            return len(answers)
        failed = [r for r in replies if isinstance(r, Exception)]
        if failed:
            self.answers_not_kept(len(failed), store_failure(failed[0]))
        return len(answers)

    # -- labels -------------------------------------------------------------------------

    def apply_label(
        self,
        txn_id: str,
        is_fraud: bool,
        label_time: float,
        card_id: str | None = None,
        merchant_id: str | None = None,
        event_time: float | None = None,
    ) -> str:
        args = [
            self.prefix, txn_id, "1" if is_fraud else "0", repr(label_time), card_id or "",
            merchant_id or "", "" if event_time is None else repr(event_time),
            repr(self._lateness), repr(self._reach), self._ttl_ms, self._ttl_ms,
            repr(self._dedup_window),
        ]  # fmt: skip
        with unavailable_as_store_error():
            outcome = self._label_script(args=args)
        if isinstance(outcome, list):  # refused: label_before_event, with the event's time
            raise ValueError(label_before_event(label_time, float(outcome[1])))
        return _text(outcome)

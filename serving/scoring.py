"""Scoring one event: features, the champion under a deadline and a breaker, the heuristic
fallback, the challenger in shadow, and the scored-event log.

The champion's ONNX call runs inline (about 10 µs; a batch is one call). Running it in a
worker thread so that `asyncio.wait_for` could abandon it was measured at 37% lower
throughput and a 26 ms p99 under load (see docs/architecture.md), so the deadline is
enforced where a call can wait: with injected latency (the seed's
SENTINEL_INJECT_LATENCY_MS) the call is raced against the deadline and the heuristic
answers at the deadline; an inline call that overruns is counted as slow and opens the
breaker, so later requests go straight to the heuristic.

Idempotency: each event with a card carries its request body's fingerprint to the engine.
A retry (its transaction id remembered within the dedup window) with the same body gets the
answer stored for the id, without a model call or a scored-log line; with another body the
whole call is refused (409) before any of it is processed. Fresh answers are stored once
they are known: in memory kept and journaled before they are sent; on Redis queued, and
written ahead of the worker's next call in its pipeline or, when no call comes within
`redis_answer_delay_ms`, by the idle flush (`flush_due_answers`); see `_keep`.

Event-time guard: an event stamped more than `max_clock_skew_s` after the service's wall
clock (`Scorer.clock`, injectable) is refused before any event of the call reaches the
engine, so a bad timestamp can never move the engine's clock (DESIGN.md §3). Far-past events
are scored; the engine, too late to add them, says so (`ScoreOutcome.state`).
"""

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import orjson

from serving.batching import TurnBatcher
from serving.breaker import CircuitBreaker
from serving.bundle import Bundle, ServedModel
from serving.feature_engine import EventArgs, FeatureEngine, RefusedEvent
from serving.heuristic import HeuristicResult, heuristic_score
from serving.journal import Journal
from serving.metrics import HotPathCounters
from serving.models import LoadedModels, ModelManager
from serving.predictor import Rows
from serving.profiles import FULL, wanted_profile
from serving.redis_state import RedisFeatureEngine, log_answers_not_kept
from serving.resolve import (
    cold_start_vector,
    event_args,
    event_timestamp,
    fingerprint,
    with_given_features,
)
from serving.retries import ConflictingEvent, conflict_message
from serving.schemas import ScoreRequest
from serving.scored_log import ScoredLog
from serving.settings import ServiceSettings
from serving.timeparse import iso

log = logging.getLogger("sentinel.serving")


class NoModelError(Exception):
    """No champion is loaded yet."""


class EventError(ValueError):
    """Event `index` of a call cannot be scored; `message` starts with the field's name."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


class EventConflict(EventError):
    """Event `index` reuses a transaction id with another body (409); nothing was stored."""


@dataclass(slots=True)  # not frozen: one is built per scored event, and cheaper so
class ScoreOutcome:
    # The response body without `state` and `features`: what a retry with the same body
    # gets back (a JSON object, stored as bytes).
    answer: dict[str, Any]
    vector: list[float]  # the resolved features (`?explain=true`)
    state: str  # added, duplicate or too_late (the engine's `last_state`); stateless: no card
    replayed: bool  # `answer` is the one stored for this transaction id and body
    shadow_disagrees: bool  # the challenger, at its own threshold, would have decided otherwise


def answer_body(
    probability: float,
    scored_by: str,
    champion: Bundle,
    model: ServedModel,
    wanted: str,
    reasons: tuple[str, ...],
    shadow_probability: float | None,
) -> dict[str, Any]:
    """The response fields a retry gets back (`ScoreResponse` without state and features)."""
    body: dict[str, Any] = {
        "fraud_probability": probability,
        "decision": "decline" if probability >= model.threshold else "approve",
        "threshold": model.threshold,
        "circuit_breaker_state": "closed" if scored_by == "model" else "open",
        "model_version": champion.version,
        "scored_by": scored_by,
        "reasons": reasons,
        "profile": model.profile,  # full, or the request profile whose model answered
    }
    if model.profile != wanted:  # the champion has no model for the profile wanted
        body["profile_unavailable"] = wanted
    if shadow_probability is not None:
        body["shadow_fraud_probability"] = shadow_probability
    return body


Wanted = tuple[str, str]  # the profile (serving/profiles.py) champion and challenger want
Item = tuple[Wanted, list[float]]  # a row as the batcher queues it
BOTH_FULL: Wanted = (FULL, FULL)


class ModelScores(NamedTuple):
    champion: float | None  # None: slow, failed, not asked (breaker open) or not a probability
    challenger: float | None
    champion_us: float  # the whole (batched) call this row was part of
    challenger_us: float | None
    champion_model: ServedModel
    challenger_model: ServedModel | None


def _valid(p: float) -> bool:
    return math.isfinite(p) and 0.0 <= p <= 1.0


def ahead_of_clock(field: str, t: float, now: float, skew_s: float) -> str | None:
    """Why a timestamp `t` is refused, naming `field`: more than `skew_s` after `now`."""
    if t <= now + skew_s:
        return None
    return (
        f"{field}: {iso(t)} is more than {skew_s:g} s ahead of the service clock ({iso(now)}); "
        "check the sender's clock"
    )


class Scorer:
    def __init__(
        self,
        settings: ServiceSettings,
        manager: ModelManager,
        engine: FeatureEngine,
        breaker: CircuitBreaker,
        log: ScoredLog,
        counters: HotPathCounters,
        journal: Journal | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal  # the engine's inputs, written out before any answer
        self.manager = manager
        self.engine = engine
        self.breaker = breaker
        self.log = log
        self.counters = counters
        self._deadline_s = settings.circuit_threshold_ms / 1000.0
        self.clock: Callable[[], float] = time.time  # the wall clock; tests inject their own
        self.batcher: TurnBatcher[LoadedModels, Item, ModelScores]
        self.model_calls = 0  # batched calls of the champion: one per turn and profile
        self._ejecting: set[Path] = set()  # bundles whose ejection has been started
        self._background: set[asyncio.Task[None]] = set()  # strong references while they run
        self.batcher = TurnBatcher(self._predict)
        # On Redis, answers are queued by the engine (see `_keep`); the idle flush's timer.
        self._queued = engine if isinstance(engine, RedisFeatureEngine) else None
        self._answer_delay_s = settings.redis_answer_delay_ms / 1000.0
        self._flush_timer: asyncio.TimerHandle | None = None
        if self._queued is not None:
            self._queued.answers_not_kept = self._answers_not_kept

    async def _slow_predict(self, model: ServedModel, rows: Rows) -> list[float]:
        await asyncio.sleep(self.settings.inject_latency_ms / 1000.0)
        return model.predictor.predict_rows(rows)

    async def _champion(self, bundle: Bundle, model: ServedModel, rows: Rows) -> list[float | None]:
        """The champion's probability per row; None where it was slow, failed, not asked or
        not a probability. A batch of rows is one model call, judged by the breaker as one
        (one breaker for every model of the champion bundle: a broken profile model sends
        its callers to the heuristic, and opens the breaker for all once it trips)."""
        if self.settings.force_circuit_open or not self.breaker.allow():
            return [None] * len(rows)
        started = time.perf_counter()
        try:
            if self.settings.inject_latency_ms > 0:
                scores = await asyncio.wait_for(self._slow_predict(model, rows), self._deadline_s)
            else:
                scores = model.predictor.predict_rows(rows)
        except Exception:  # a timeout or a broken model: the heuristic answers
            self.breaker.record(True)
            return [None] * len(rows)
        slow = time.perf_counter() - started > self._deadline_s
        valid: list[float | None] = [p if _valid(p) else None for p in scores]
        self.breaker.record(slow or None in valid)
        if None in valid:  # a model that answers NaN or infinity is broken, not slow
            self._eject(bundle, model, scores[valid.index(None)])
        return valid

    def _eject(self, bundle: Bundle, model: ServedModel, answer: float) -> None:
        """Eject in a worker thread, once per bundle: the swap takes the manager's lock,
        which a reload may hold while it loads bundles, and may load the previous champion;
        neither may stall the event loop. Until it is done the heuristic answers."""
        if bundle.path in self._ejecting:
            return
        self._ejecting.add(bundle.path)
        reason = f"its {model.profile} model answered {answer!r}, not a probability"
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self._eject_now, bundle, reason)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _eject_now(self, bundle: Bundle, reason: str) -> None:
        if self.manager.eject(bundle, reason):
            self.counters.ejections += 1

    def _shadow(self, model: ServedModel | None, rows: Rows) -> list[float | None]:
        if model is None:
            return [None] * len(rows)
        try:  # isolation: a failing challenger never touches the champion's answer
            scores = model.predictor.predict_rows(rows)
        except Exception:
            self.counters.shadow_failures += len(rows)
            return [None] * len(rows)
        valid = [p if _valid(p) else None for p in scores]
        self.counters.shadow_failures += valid.count(None)
        return valid

    async def _predict(self, models: LoadedModels, items: list[Item]) -> list[ModelScores]:
        """Both models' probabilities per row, and how long each (batched) call took: the
        batcher's model call. Rows are grouped by the profiles each bundle wants for them:
        one call per group, the groups concurrently (with injected latency, a turn that
        mixes profiles still answers within one deadline)."""
        first = items[0][0]
        if all(wanted == first for wanted, _ in items):  # the usual case: one profile
            return await self._predict_profile(models, first, [v for _, v in items])
        groups: dict[Wanted, list[int]] = {}
        for i, (wanted, _) in enumerate(items):
            groups.setdefault(wanted, []).append(i)
        scored = await asyncio.gather(
            *(
                self._predict_profile(models, wanted, [items[i][1] for i in positions])
                for wanted, positions in groups.items()
            )
        )
        results: list[ModelScores] = [None] * len(items)  # type: ignore[list-item]
        for positions, group in zip(groups.values(), scored, strict=True):
            for i, one in zip(positions, group, strict=True):
                results[i] = one
        return results

    async def _predict_profile(
        self, models: LoadedModels, wanted: Wanted, vectors: list[list[float]]
    ) -> list[ModelScores]:
        assert models.champion is not None  # score_many refuses to start without one
        self.model_calls += 1
        model = models.champion.model_for(wanted[0])
        shadow = models.challenger.model_for(wanted[1]) if models.challenger else None
        rows = model.rows(vectors)
        started = time.perf_counter()
        champion = await self._champion(models.champion, model, rows)
        between = time.perf_counter()
        if shadow is not None and shadow.columns != model.columns:
            rows = shadow.rows(vectors)
        challenger = self._shadow(shadow, rows)
        champion_us = round((between - started) * 1e6, 1)
        challenger_us = round((time.perf_counter() - between) * 1e6, 1) if shadow else None
        return [
            ModelScores(p, shadow_p, champion_us, challenger_us, model, shadow)
            for p, shadow_p in zip(champion, challenger, strict=True)
        ]

    def _wanted(self, models: LoadedModels, request: ScoreRequest) -> Wanted:
        """(champion's, challenger's) profile for a request without a card."""
        champion, challenger, known = models.champion, models.challenger, models.known_profiles
        assert champion is not None
        return (
            wanted_profile(request, champion.profiles, known),
            wanted_profile(request, challenger.profiles, known) if challenger else FULL,
        )

    async def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutcome]:
        """Score events in order: each one's features see the events before it."""
        models = self.manager.current  # read once: these requests finish on this pair
        champion, challenger = models.champion, models.challenger
        if champion is None:
            raise NoModelError("no champion model is loaded yet")
        if not requests:
            return []  # no model call: an empty call must not count for the breaker
        received = self.clock()
        times = [event_timestamp(request, received) for request in requests]
        skew = self.settings.max_clock_skew_s
        if max(times) > received + skew:  # refuse before any event touches the state
            for index, t in enumerate(times):
                refused = ahead_of_clock("event_time", t, received, skew)
                if refused is not None:
                    raise EventError(index, refused)
        stateful: list[EventArgs | None] = []
        for index, (request, t) in enumerate(zip(requests, times, strict=True)):
            try:
                stateful.append(event_args(request, t))
            except ValueError as exc:
                raise EventError(index, str(exc)) from None
        at = [i for i, args in enumerate(stateful) if args is not None]  # the events' requests
        events = [args for args in stateful if args is not None]
        fingerprints = [fingerprint(requests[i]) for i in at]
        try:  # one round trip on Redis
            processed = iter(self.engine.process_many(events, fingerprints))
        except ConflictingEvent as exc:  # a retry with another body: nothing was processed
            index = at[exc.index]
            self.counters.conflicts += 1
            changed = exc.changed
            if requests[index].event_time is None:  # stamped on arrival: not the caller's
                changed = [name for name in changed if name != "event_time"]
            raise EventConflict(index, conflict_message(exc.txn_id, changed)) from None
        except RefusedEvent as exc:  # refused by the shared state's own clock
            raise EventError(at[exc.index], exc.message) from None
        if self.journal is not None:
            for e in events:
                self.journal.event(e)
        vectors, states, wanted, stored = [], [], [], []
        for request, t, args in zip(requests, times, stateful, strict=True):
            if args is None:
                vector, state, answer = cold_start_vector(request, t), "stateless", None
            else:
                vector, state, answer = next(processed)
            vectors.append(with_given_features(vector, request))
            states.append(state)
            stored.append(answer)
            wanted.append(BOTH_FULL if args is not None else self._wanted(models, request))
        outcomes: list[ScoreOutcome | None] = [
            None
            if answer is None
            else ScoreOutcome(orjson.loads(answer), vector, state, True, False)
            for answer, vector, state in zip(stored, vectors, states, strict=True)
        ]  # a retry's stored answer; the others are scored below
        fresh = [i for i, answer in enumerate(stored) if answer is None]
        rows = [(wanted[i], vectors[i]) for i in fresh]
        scores = await self.batcher.submit(models, rows) if rows else []
        kept: list[tuple[str, str, bytes]] = []
        fingerprint_of = dict(zip(at, fingerprints, strict=True))
        for i, scored in zip(fresh, scores, strict=True):
            request = requests[i]
            rules = heuristic_score(vectors[i])
            outcome = self._outcome(models, wanted[i][0], vectors[i], states[i], scored, rules)
            self._log(request, times[i], received, outcome, scored, rules.probability, challenger)
            outcomes[i] = outcome
            args = stateful[i]
            if args is not None:
                kept.append((args[0], fingerprint_of[i], orjson.dumps(outcome.answer)))
        self._keep(kept)
        self.log.write()  # one OS write per call, before its answer
        return cast(list[ScoreOutcome], outcomes)  # every one is set by now

    def _outcome(
        self, models: LoadedModels, wanted: str, vector: list[float], state: str,
        scored: ModelScores, rules: HeuristicResult,
    ) -> ScoreOutcome:  # fmt: skip
        assert models.champion is not None
        p, shadow, shadow_model = scored.champion, scored.challenger, scored.challenger_model
        probability = p if p is not None else rules.probability
        answer = answer_body(
            probability, "model" if p is not None else "heuristic", models.champion,
            scored.champion_model, wanted, rules.reasons, shadow,
        )  # fmt: skip
        disagrees = (
            shadow_model is not None
            and shadow is not None
            and (shadow >= shadow_model.threshold) != (answer["decision"] == "decline")
        )
        return ScoreOutcome(answer, vector, state, False, disagrees)

    def _keep(self, answers: list[tuple[str, str, bytes]]) -> None:
        """Store fresh answers for retries. In memory they are kept, and the journal's lines
        handed to the OS in one write (fsynced when `journal_fsync_ms` is 0), before the
        answers are sent.

        On Redis the engine queues them: they go as `SET NX`s ahead of the worker's next
        call in that call's pipeline, so under load they cost no round trip; when no call
        comes within `redis_answer_delay_ms` (5 ms), a timer writes them (`flush_due_answers`,
        one round trip; armed only while answers wait, so an idle worker never wakes for it,
        where the service's background loop ticks only once a second), and the service's
        stop writes what is left (`flush_answers`). Until
        then a retry on another worker or host is recognized (its fingerprint was stored by
        its event's script) but finds no answer: it is scored again on the same features. A
        write Redis fails is counted in `answers_not_kept` and logged; the answer was sent.
        Measured: writing them before each answer cost 25% of the throughput on Redis
        (docs/BENCHMARKS.md, "Idempotent retries"). With the delay 0 they are written so,
        before the answers are sent (one more round trip per call)."""
        if answers:
            self.engine.remember_answers(answers)  # in memory: kept; on Redis: queued
            if self.journal is not None:
                for txn_id, fp, answer in answers:
                    self.journal.answer(txn_id, fp, answer)
            if self._queued is not None:
                if self._answer_delay_s <= 0:
                    self._queued.flush_answers()
                elif self._flush_timer is None:
                    due_in = self._queued.answers_due_in(self._answer_delay_s)
                    self._arm_answer_flush(self._answer_delay_s if due_in is None else due_in)
        if self.journal is not None:
            self.journal.write()  # kill -9 safe: every answered event is on its way to disk

    def _arm_answer_flush(self, after_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._flush_timer = loop.call_later(max(after_s, 0.0), self.flush_due_answers)

    def flush_due_answers(self) -> None:
        """The idle flush (on the event loop, like every engine call): write the queued
        answers once the oldest has waited `redis_answer_delay_ms` without a call carrying
        it; otherwise wait for the rest of that. Under load each call carries the queue, so
        this finds it younger than the delay and writes nothing."""
        self._flush_timer = None
        if self._queued is None:
            return
        due_in = self._queued.answers_due_in(self._answer_delay_s)
        if due_in is None:
            return
        if due_in <= 0:
            self._queued.flush_answers()
        else:
            self._arm_answer_flush(due_in)

    def flush_answers(self) -> int:
        """Write every queued answer now (the service's stop); how many. In memory: 0."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        return 0 if self._queued is None else self._queued.flush_answers()

    def _answers_not_kept(self, count: int, error: str) -> None:
        """Answers Redis failed to keep: a retry of theirs will be scored again."""
        self.counters.answers_not_kept += count
        log_answers_not_kept(count, error)

    def _log(
        self,
        request: ScoreRequest,
        event_time: float,
        received: float,
        outcome: ScoreOutcome,
        scored: ModelScores,
        heuristic: float,
        challenger: Bundle | None,
    ) -> None:
        answer, shadow_model = outcome.answer, scored.challenger_model
        self.log.append(
            {
                "transaction_id": request.transaction_id,
                "event_time": event_time,
                "scored_at": received,
                "champion_version": answer["model_version"],
                "profile": answer["profile"],
                "champion_score": scored.champion,
                "champion_threshold": answer["threshold"],
                "champion_call_us": scored.champion_us,
                "heuristic_score": heuristic,
                "challenger_version": challenger.version if challenger else None,
                "challenger_score": answer.get("shadow_fraud_probability"),
                "challenger_profile": shadow_model.profile if shadow_model else None,
                "challenger_threshold": shadow_model.threshold if shadow_model else None,
                "challenger_call_us": scored.challenger_us,
                "decision": answer["decision"],
                "scored_by": answer["scored_by"],
                # added, too_late (the card's history lacks it: its features are partial),
                # duplicate, stateless: the shadow report weighs the evidence by it
                "state": outcome.state,
            }
        )

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
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import orjson

from serving.batching import TurnBatcher
from serving.breaker import BreakerState, CircuitBreaker
from serving.bundle import Bundle, ServedModel
from serving.canary import Canary, CanaryConfig, FileStops, in_canary
from serving.feature_engine import EventArgs, FeatureEngine, RefusedEvent
from serving.heuristic import HEURISTIC_ONLY_THRESHOLD, HeuristicResult, heuristic_score
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
    bundle: Bundle,
    model: ServedModel,
    wanted: str,
    reasons: tuple[str, ...],
    shadow_probability: float | None,
    decided_by: str = "champion",
) -> dict[str, Any]:
    """The response fields a retry gets back (`ScoreResponse` without state and features):
    `bundle`'s `model` decided (the champion's, or the challenger's for a canary card)."""
    body: dict[str, Any] = {
        "fraud_probability": probability,
        "decision": "decline" if probability >= model.threshold else "approve",
        "threshold": model.threshold,
        "circuit_breaker_state": "closed" if scored_by == "model" else "open",
        "model_version": bundle.version,
        "scored_by": scored_by,
        "reasons": reasons,
        "profile": model.profile,  # full, or the request profile whose model answered
        "decided_by": decided_by,
    }
    if model.profile != wanted:  # the bundle has no model for the profile wanted
        body["profile_unavailable"] = wanted
    if shadow_probability is not None:
        body["shadow_fraud_probability"] = shadow_probability
    return body


def policy_body(
    policy: str,
    cause: str,
    rules: HeuristicResult,
    champion: Bundle | None,
    model: ServedModel | None,
    wanted: str,
    shadow_probability: float | None,
) -> dict[str, Any]:
    """The answer when the model could not give one (`cause`: breaker_open, model_error,
    no_model): the heuristic's probability and reasons, and the decision SENTINEL_FAILURE_POLICY
    names (heuristic: the heuristic's at the model's threshold, or at
    HEURISTIC_ONLY_THRESHOLD with no model loaded)."""
    if champion is not None and model is not None:
        body = answer_body(
            rules.probability, "heuristic", champion, model, wanted, rules.reasons,
            shadow_probability,
        )  # fmt: skip
    else:
        body = {
            "fraud_probability": rules.probability,
            "decision": "decline" if rules.probability >= HEURISTIC_ONLY_THRESHOLD else "approve",
            "threshold": HEURISTIC_ONLY_THRESHOLD,
            "circuit_breaker_state": "open",
            "model_version": None,
            "scored_by": "heuristic",
            "reasons": rules.reasons,
            "profile": "heuristic",
            "decided_by": "champion",
        }
    if policy != "heuristic":
        body["decision"] = policy  # review, decline or approve, whatever the score says
    body["failure_policy"] = policy
    body["failure_cause"] = cause
    return body


Wanted = tuple[str, str]  # the profile (serving/profiles.py) champion and challenger want
Item = tuple[Wanted, list[float]]  # a row as the batcher queues it
BOTH_FULL: Wanted = (FULL, FULL)


class ModelScores(NamedTuple):
    champion: float | None  # None: failed, not asked (breaker open) or not a probability
    champion_failure: str | None  # why champion is None: breaker_open or model_error
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
        challenger_breaker: CircuitBreaker | None = None,
        canary: Canary | None = None,
    ) -> None:
        self.settings = settings
        self.challenger_breaker = challenger_breaker or CircuitBreaker(
            settings.breaker_config(), model="challenger"
        )
        self.canary = canary or Canary(CanaryConfig(), FileStops(settings.home / "serving"))
        self.failure_policy = settings.failure_policy
        self._challenger_version: str | None = None  # the one the challenger breaker judges
        self._features_below = int(settings.log_features * (1 << 32))  # crc32 sample bound
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

    async def _champion(
        self, bundle: Bundle, model: ServedModel, rows: Rows
    ) -> tuple[list[float | None], str]:
        """The champion's probability per row, None where it failed, was not asked or gave
        no probability; and the cause to report for the None rows (breaker_open or
        model_error). A batch of rows is one model call, judged by the breaker as one
        (one breaker for every model of the champion bundle: a broken profile model sends
        its callers to the failure policy, and opens the breaker for all once it trips)."""
        if self.settings.force_circuit_open or not self.breaker.allow():
            return [None] * len(rows), "breaker_open"
        started = time.perf_counter()
        try:
            if self.settings.inject_latency_ms > 0:
                scores = await asyncio.wait_for(self._slow_predict(model, rows), self._deadline_s)
            else:
                scores = model.predictor.predict_rows(rows)
        except Exception:  # a timeout or a broken model: the failure policy answers
            self.breaker.record(True)
            return [None] * len(rows), "model_error"
        slow = time.perf_counter() - started > self._deadline_s
        valid: list[float | None] = [p if _valid(p) else None for p in scores]
        self.breaker.record(slow or None in valid)
        if None in valid:  # a model that answers NaN or infinity is broken, not slow
            self._eject(bundle, model, scores[valid.index(None)])
        return valid, "model_error"

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

    def _challenger(self, model: ServedModel | None, rows: Rows) -> list[float | None]:
        """The challenger's probability per row (None: failed, not asked), under its own
        breaker: a slow or failing challenger is not called for a while, so it cannot slow
        the champion's answers, and its opening stops the canary."""
        if model is None or not self.challenger_breaker.allow():
            return [None] * len(rows)
        started = time.perf_counter()
        try:  # isolation: a failing challenger never touches the champion's answer
            scores = model.predictor.predict_rows(rows)
        except Exception:
            scores = [math.nan] * len(rows)
        valid = [p if _valid(p) else None for p in scores]
        self.counters.shadow_failures += valid.count(None)
        slow = time.perf_counter() - started > self._deadline_s
        self.challenger_breaker.record(slow or None in valid)
        if self.challenger_breaker.state is BreakerState.OPEN:
            self.canary.stop("breaker_open")
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
        champion, cause = await self._champion(models.champion, model, rows)
        between = time.perf_counter()
        if shadow is not None and shadow.columns != model.columns:
            rows = shadow.rows(vectors)
        challenger = self._challenger(shadow, rows)
        champion_us = round((between - started) * 1e6, 1)
        challenger_us = round((time.perf_counter() - between) * 1e6, 1) if shadow else None
        failed = None if None not in champion else cause
        return [
            ModelScores(p, failed, shadow_p, champion_us, challenger_us, model, shadow)
            for p, shadow_p in zip(champion, challenger, strict=True)
        ]

    def _canary_share(self, challenger: Bundle | None) -> float:
        """The canary's share for this challenger; a new challenger starts with a closed
        breaker of its own (the one before may have left it open)."""
        version = challenger.version if challenger is not None else None
        if version != self._challenger_version:
            self._challenger_version = version
            self.challenger_breaker.reset()
        return self.canary.share(version)

    def _wanted(self, models: LoadedModels, request: ScoreRequest) -> Wanted:
        """(champion's, challenger's) profile for a request without a card."""
        champion, challenger, known = models.champion, models.challenger, models.known_profiles
        if champion is None:
            return BOTH_FULL  # nothing to ask: the failure policy answers
        return (
            wanted_profile(request, champion.profiles, known),
            wanted_profile(request, challenger.profiles, known) if challenger else FULL,
        )

    async def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutcome]:
        """Score events in order: each one's features see the events before it."""
        models = self.manager.current  # read once: these requests finish on this pair
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
        # Before the model calls: a stop in this call belongs to this challenger.
        share = self._canary_share(models.challenger)
        challenger = models.challenger.version if models.challenger else ""  # share 0 if none
        scores: list[ModelScores | None] = []
        if models.champion is None:  # nothing to call: the failure policy answers them all
            scores = [None] * len(rows)
        elif rows:
            scores = list(await self.batcher.submit(models, rows))
        kept: list[tuple[str, str, bytes]] = []
        fingerprint_of = dict(zip(at, fingerprints, strict=True))
        for i, scored in zip(fresh, scores, strict=True):
            request = requests[i]
            rules = heuristic_score(vectors[i])
            key = request.card_id or request.transaction_id  # a card sees one model
            to_challenger = share > 0.0 and key is not None and in_canary(challenger, key, share)
            outcome = self._outcome(
                models, wanted[i], vectors[i], states[i], scored, rules, to_challenger
            )
            self._log(request, times[i], received, outcome, scored, rules.probability, models)
            outcomes[i] = outcome
            args = stateful[i]
            if args is not None:
                kept.append((args[0], fingerprint_of[i], orjson.dumps(outcome.answer)))
        self._keep(kept)
        self.log.write()  # one OS write per call, before its answer
        return cast(list[ScoreOutcome], outcomes)  # every one is set by now

    def _outcome(
        self, models: LoadedModels, wanted: Wanted, vector: list[float], state: str,
        scored: ModelScores | None, rules: HeuristicResult, to_challenger: bool,
    ) -> ScoreOutcome:  # fmt: skip
        """Who decides: the challenger for a canary card when it answered, else the
        champion's model, else the failure policy."""
        champion = models.champion
        if scored is None or champion is None:  # no model loaded
            answer = policy_body(self.failure_policy, "no_model", rules, None, None, FULL, None)
            return ScoreOutcome(answer, vector, state, False, False)
        p, shadow, shadow_model = scored.champion, scored.challenger, scored.challenger_model
        champion_declines = p is not None and p >= scored.champion_model.threshold
        challenger_declines = (
            shadow is not None and shadow_model is not None and shadow >= shadow_model.threshold
        )
        if p is not None and shadow is not None:  # both decided: the canary's evidence
            self.canary.observe(champion_declines, challenger_declines)
        if to_challenger and shadow is not None and shadow_model is not None:
            assert models.challenger is not None
            answer = answer_body(
                shadow, "model", models.challenger, shadow_model, wanted[1], rules.reasons,
                None, decided_by="challenger",
            )  # fmt: skip
            disagrees = p is not None and champion_declines != challenger_declines
            return ScoreOutcome(answer, vector, state, False, disagrees)
        if p is not None:
            answer = answer_body(
                p, "model", champion, scored.champion_model, wanted[0], rules.reasons, shadow
            )
        else:
            answer = policy_body(
                self.failure_policy, scored.champion_failure or "model_error", rules,
                champion, scored.champion_model, wanted[0], shadow,
            )  # fmt: skip
        disagrees = (
            shadow is not None
            and shadow_model is not None
            and challenger_declines != (answer["decision"] == "decline")
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
        scored: ModelScores | None,
        heuristic: float,
        models: LoadedModels,
    ) -> None:
        answer = outcome.answer
        champion_model = scored.champion_model if scored else None
        shadow_model = scored.challenger_model if scored else None
        challenger = models.challenger if scored else None
        record = {
            "transaction_id": request.transaction_id,
            "event_time": event_time,
            "scored_at": received,
            "champion_version": models.champion.version if models.champion else None,
            "profile": champion_model.profile if champion_model else answer["profile"],
            "champion_score": scored.champion if scored else None,
            "champion_threshold": champion_model.threshold if champion_model else None,
            "champion_call_us": scored.champion_us if scored else None,
            "heuristic_score": heuristic,
            "challenger_version": challenger.version if challenger else None,
            "challenger_score": scored.challenger if scored else None,
            "challenger_profile": shadow_model.profile if shadow_model else None,
            "challenger_threshold": shadow_model.threshold if shadow_model else None,
            "challenger_call_us": scored.challenger_us if scored else None,
            "decision": answer["decision"],
            "scored_by": answer["scored_by"],
            # champion, or challenger for a canary card: the shadow report reads them apart
            "decided_by": answer["decided_by"],
            # added, too_late (the card's history lacks it: its features are partial),
            # duplicate, stateless: the shadow report weighs the evidence by it
            "state": outcome.state,
        }
        if "failure_policy" in answer:
            record["failure_policy"] = answer["failure_policy"]
            record["failure_cause"] = answer["failure_cause"]
        if self._features_below and self._sampled(request.transaction_id):
            record["features"] = outcome.vector  # for the drift watch; NaN is written as null
        self.log.append(record)

    def _sampled(self, transaction_id: str | None) -> bool:
        """SENTINEL_LOG_FEATURES: the same transactions on every worker (by id)."""
        if transaction_id is None:
            return random.random() * (1 << 32) < self._features_below
        return zlib.crc32(transaction_id.encode()) < self._features_below

"""Card precision top-k as the Fraud Detection Handbook defines it, on hand-made days."""

import numpy as np
import pandas as pd
import pytest

from sentinel_dagster.training.evaluation import (
    card_precision_at_k,
    compromised_before_holdout,
    evaluate_scores,
    known_compromised_cards,
)
from sentinel_dagster.training.training_data import LABEL_COLUMN, PERIOD_COLUMN, from_frame

DAY = pd.Timedelta(days=1)
START = pd.Timestamp("2026-01-01", tz="UTC")

# (day, card, score, is_fraud). "k" is a card known compromised before the period.
PAYMENTS = [
    # Day 0: a's best score (0.9) is a genuine payment, its fraud scores only 0.2.
    (0, "a", 0.9, 0),
    (0, "a", 0.2, 1),
    (0, "b", 0.8, 0),
    (0, "c", 0.7, 1),
    (0, "k", 0.99, 1),
    # Day 1: a is still frauded and still scores high.
    (1, "a", 0.95, 1),
    (1, "c", 0.6, 1),
    (1, "b", 0.5, 0),
    (1, "k", 0.99, 1),
    # Day 2
    (2, "a", 0.9, 1),
    (2, "c", 0.8, 1),
    (2, "d", 0.7, 1),
    (2, "e", 0.3, 0),
    (2, "k", 0.99, 1),
]


def _payments() -> tuple[pd.DataFrame, np.ndarray]:
    days, cards, scores, frauds = zip(*PAYMENTS, strict=True)
    frame = pd.DataFrame(
        {
            # Hours apart within a day: the day, not the time, groups payments.
            "event_time": [START + d * DAY + pd.Timedelta(hours=i) for i, d in enumerate(days)],
            "card_id": cards,
            "is_fraud": frauds,
        }
    )
    return frame, np.array(scores)


def test_a_card_detected_on_one_day_does_not_count_again_later() -> None:
    frame, scores = _payments()
    # Day 0: top 2 are k (0.99, fraud) and a (0.9, fraud): 2/2; k and a are detected.
    # Day 1: k and a leave; top 2 are c (0.6, fraud) and b (0.5): 1/2; c is detected.
    # Day 2: k, a and c leave; top 2 are d (0.7, fraud) and e (0.3): 1/2.
    assert card_precision_at_k(frame, scores, k=2) == pytest.approx((1 + 0.5 + 0.5) / 3)
    # Without removal (each day judged alone) k and a would fill every day's top 2: 1.0.
    per_day_alone = [
        card_precision_at_k(frame[day_rows], scores[day_rows], k=2)
        for day_rows in (frame["event_time"].dt.floor("D") == START + d * DAY for d in range(3))
    ]
    assert per_day_alone == [1.0, 1.0, 1.0]


def test_known_compromised_cards_are_left_out_of_every_day() -> None:
    frame, scores = _payments()
    # Day 0: top 2 are a (0.9, fraud) and b (0.8): 1/2; a is detected.
    # Day 1: top 2 are c (0.6, fraud) and b (0.5): 1/2; c is detected.
    # Day 2: top 2 are d (0.7, fraud) and e (0.3): 1/2.
    assert card_precision_at_k(frame, scores, k=2, known_compromised=frozenset({"k"})) == 0.5
    labels = frame["is_fraud"].to_numpy()
    metrics = evaluate_scores(frame, labels, scores, 0.5, known_compromised=frozenset({"k"}))
    # k=100 takes every card left: day 0 finds a and c, day 1 only b is left, day 2 finds d.
    assert metrics.card_precision_at_100 == pytest.approx((2 + 0 + 1) / 3 / 100)


def test_a_card_ranks_by_its_highest_score_and_is_frauded_by_any_payment() -> None:
    frame, scores = _payments()
    first_day = (frame["event_time"] < START + DAY).to_numpy()
    # Day 0 without k, k=1: a ranks first on its genuine 0.9 payment (ranked by its mean,
    # 0.55, genuine b would lead) and counts as frauded through its 0.2 payment: 1/1.
    precision = card_precision_at_k(
        frame[first_day], scores[first_day], k=1, known_compromised=frozenset({"k"})
    )
    assert precision == 1.0


def test_known_compromised_cards_need_a_fraud_labelled_by_the_cutoff() -> None:
    cutoff = START + 10 * DAY
    before = START + DAY
    frame = pd.DataFrame(
        {
            "card_id": ["early", "at_cutoff", "late_label", "no_label", "genuine", "after"],
            "event_time": [before] * 5 + [cutoff],
            "is_fraud": [1, 1, 1, 1, 0, 1],
            "label_time": [before, cutoff, cutoff + DAY, pd.NaT, before, cutoff],
        }
    )
    assert known_compromised_cards(frame, cutoff) == {"early", "at_cutoff"}


def test_compromised_before_holdout_reads_train_and_validation_up_to_the_holdout_day() -> None:
    holdout_start = START + 20 * DAY
    rows = [  # (period, card, event, label_time or None)
        ("train", "t", START, START + 2 * DAY),
        ("validation", "v", START + 15 * DAY, holdout_start + pd.Timedelta(hours=1)),
        ("validation", "w", START + 16 * DAY, START + 18 * DAY),
        ("holdout", "h", holdout_start + pd.Timedelta(hours=9), holdout_start + DAY),
    ]
    periods, cards, events, labels = zip(*rows, strict=True)
    frame = pd.DataFrame(
        {
            PERIOD_COLUMN: periods,
            LABEL_COLUMN: 1,
            "card_id": cards,
            "event_time": events,
            "is_fraud": 1,
            "label_time": labels,
        }
    )
    # The cutoff is the holdout's first day (00:00): v's label came an hour too late.
    assert compromised_before_holdout(from_frame(frame)) == {"t", "w"}


class _ScriptedModel:
    """A predictor whose calls take scripted times on an injected clock (nanoseconds)."""

    def __init__(self, durations_ns) -> None:
        self.now, self.durations = 0, iter(durations_ns)

    def clock(self) -> int:
        return self.now

    def predict_one(self, _: list[float]) -> float:
        self.now += next(self.durations, 20_000)
        return 0.0


def test_one_stalled_moment_does_not_decide_the_latency_p99() -> None:
    from sentinel_dagster.training.evaluation import single_row_latency_us

    rows = np.zeros((100, 3))
    # 50 warm-up calls, then a stall of 50 calls at 5 ms inside the first round (another
    # process had the core); every other call takes 20 us.
    stalled = _ScriptedModel([20_000] * 50 + [20_000] * 300 + [5_000_000] * 50)
    p50, p99 = single_row_latency_us(stalled.predict_one, rows, clock=stalled.clock)
    assert (p50, p99) == (20.0, 20.0)
    slow = _ScriptedModel([300_000] * 10_000)  # a model slow in every round is reported so
    assert single_row_latency_us(slow.predict_one, rows, clock=slow.clock) == (300.0, 300.0)

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from service.webhooks.schedule import (
    DEFAULT_DELAYS,
    Action,
    InvalidRetryDelays,
    Verdict,
    classify,
    next_delay,
    parse_delays,
    parse_retry_after,
    retry_delay,
)


class Fixed:
    """An rng that always picks one end of the range (or the middle)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def uniform(self, a: float, b: float) -> float:
        return {"low": a, "high": b, "mid": (a + b) / 2}[self.where]


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 5), (2, 300), (3, 1800), (4, 7200), (5, 18000), (6, 36000), (7, 36000), (8, None)],
)
def test_default_ladder(attempt: int, expected: float | None) -> None:
    assert next_delay(attempt) == expected


def test_ladder_is_the_documented_one() -> None:
    assert DEFAULT_DELAYS == (5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.mark.parametrize(("where", "factor"), [("low", 0.8), ("mid", 1.0), ("high", 1.2)])
def test_jitter_bounds(where: str, factor: float) -> None:
    assert next_delay(2, DEFAULT_DELAYS, Fixed(where)) == pytest.approx(300 * factor)


def test_jitter_stays_within_twenty_percent_and_varies() -> None:
    rng = random.Random(42)
    samples = [next_delay(3, DEFAULT_DELAYS, rng) for _ in range(500)]
    assert all(s is not None and 1440 <= s <= 2160 for s in samples)
    assert len(set(samples)) > 400


def test_custom_delays_and_exhaustion() -> None:
    delays = (0.1, 0.2)
    assert next_delay(1, delays) == 0.1
    assert next_delay(2, delays) == 0.2
    assert next_delay(3, delays) is None
    assert next_delay(1, ()) is None
    with pytest.raises(ValueError):
        next_delay(0, delays)


@pytest.mark.parametrize(
    ("status", "error", "retry_after", "action", "wait"),
    [
        (200, None, None, Action.SUCCESS, None),
        (204, None, None, Action.SUCCESS, None),
        (299, None, None, Action.SUCCESS, None),
        (410, None, None, Action.DISABLE, None),
        (429, None, 120.0, Action.RETRY, 120.0),
        (429, None, 10**9, Action.RETRY, 86400.0),
        (429, None, -3.0, Action.RETRY, 0.0),
        (429, None, None, Action.RETRY, None),
        (503, None, 30.0, Action.RETRY, 30.0),
        (500, None, 30.0, Action.RETRY, None),
        (502, None, None, Action.RETRY, None),
        (301, None, None, Action.RETRY, None),
        (302, None, None, Action.RETRY, None),
        (400, None, None, Action.RETRY, None),
        (404, None, None, Action.RETRY, None),
        (None, "timeout: no complete response within 15s", None, Action.RETRY, None),
        (None, "connection failed: refused", None, Action.RETRY, None),
        (None, None, None, Action.RETRY, None),
    ],
)
def test_classify(
    status: int | None,
    error: str | None,
    retry_after: float | None,
    action: Action,
    wait: float | None,
) -> None:
    verdict = classify(status, error, retry_after=retry_after)
    assert verdict.action is action
    assert verdict.retry_after == wait
    assert verdict.reason


def test_classify_reasons() -> None:
    assert "redirect" in classify(302).reason
    assert classify(None, "connection failed: refused").reason == "connection failed: refused"
    assert classify(429, retry_after=500, max_retry_after=60).retry_after == 60


def test_retry_delay_honours_retry_after_and_exhaustion() -> None:
    throttled = classify(429, retry_after=120)
    assert retry_delay(throttled, 1) == 120  # ladder says 5 s, receiver says 120 s
    assert retry_delay(throttled, 3) == 1800  # ladder already waits longer
    assert retry_delay(throttled, 8) is None  # exhausted: failed, Retry-After or not
    assert retry_delay(classify(500), 2, (1, 2, 3)) == 2
    assert retry_delay(classify(200), 1) is None
    assert retry_delay(classify(410), 1) is None
    assert retry_delay(Verdict(Action.RETRY, "x"), 1, (10,), Fixed("high")) == pytest.approx(12)


NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Wed, 01 Jan 2025 12:05:00 GMT", 300.0),
        ("Wednesday, 01-Jan-25 12:01:00 GMT", 60.0),
        ("Wed, 01 Jan 2025 11:00:00 GMT", 0.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5,300,1800", (5.0, 300.0, 1800.0)),
        (" 0.05 , 0.1 ", (0.05, 0.1)),
        ("0", (0.0,)),
    ],
)
def test_parse_delays(value: str, expected: tuple[float, ...]) -> None:
    assert parse_delays(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "comma-separated"),
        ("5,,10", "comma-separated"),
        ("5,", "comma-separated"),
        ("5,abc", "'abc' is not a number"),
        ("5,-1", "'-1' must be"),
        ("inf", "'inf' must be"),
        ("nan", "'nan' must be"),
    ],
)
def test_parse_delays_errors(value: str, message: str) -> None:
    with pytest.raises(InvalidRetryDelays, match=message):
        parse_delays(value)

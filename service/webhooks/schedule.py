"""Retry policy for webhook deliveries: pure functions, no clock or I/O of their own."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

# The Standard Webhooks / Svix ladder after the immediate first attempt:
# 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 28 h of retries, 8 attempts in all).
DEFAULT_DELAYS: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.2
# A receiver's Retry-After is honoured up to this many seconds (one day).
MAX_RETRY_AFTER = 86400.0
RETRY_AFTER_STATUSES = frozenset({429, 503})


class Uniform(Protocol):
    """The part of ``random.Random`` the schedule needs (seedable in tests)."""

    def uniform(self, a: float, b: float) -> float: ...


class Action(enum.StrEnum):
    SUCCESS = "success"
    RETRY = "retry"
    DISABLE = "disable"  # the endpoint asked never to be called again (410 Gone)


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    # The earliest next attempt the receiver asked for (seconds), already capped.
    retry_after: float | None = None


class InvalidRetryDelays(ValueError):
    """A retry delay list that cannot be used."""


def next_delay(
    attempt_number: int, delays: Sequence[float] = DEFAULT_DELAYS, rng: Uniform | None = None
) -> float | None:
    """Seconds to wait after failed attempt ``attempt_number`` (1 = the first attempt).

    None means the ladder is exhausted and the delivery has failed. With ``rng`` the delay
    gets ±20% jitter so retries of many deliveries do not arrive in lockstep.
    """
    if attempt_number < 1:
        raise ValueError("attempt_number starts at 1")
    if attempt_number > len(delays):
        return None
    base = float(delays[attempt_number - 1])
    if rng is None:
        return base
    return base * rng.uniform(1 - JITTER, 1 + JITTER)


def classify(
    status_code: int | None,
    error: str | None = None,
    *,
    retry_after: float | None = None,
    max_retry_after: float = MAX_RETRY_AFTER,
) -> Verdict:
    """What one attempt's outcome means for the delivery.

    2xx succeeds; 410 disables the endpoint; everything else (3xx, which is never
    followed, other 4xx and 5xx, timeouts, connection errors) is retried. A Retry-After
    sent with 429 or 503 sets the earliest next attempt, capped at ``max_retry_after``.
    """
    if status_code is None:
        return Verdict(Action.RETRY, error or "no response")
    if 200 <= status_code < 300:
        return Verdict(Action.SUCCESS, f"HTTP {status_code}")
    if status_code == 410:
        return Verdict(Action.DISABLE, "HTTP 410: the endpoint is gone")
    wait = None
    if status_code in RETRY_AFTER_STATUSES and retry_after is not None:
        wait = min(max(retry_after, 0.0), max_retry_after)
    if 300 <= status_code < 400:
        return Verdict(Action.RETRY, f"HTTP {status_code}: redirects are not followed")
    return Verdict(Action.RETRY, f"HTTP {status_code}", wait)


def retry_delay(
    verdict: Verdict,
    attempt_number: int,
    delays: Sequence[float] = DEFAULT_DELAYS,
    rng: Uniform | None = None,
) -> float | None:
    """Seconds until the next attempt for a RETRY verdict, None when there is none."""
    if verdict.action is not Action.RETRY:
        return None
    delay = next_delay(attempt_number, delays, rng)
    if delay is None:
        return None
    return max(delay, verdict.retry_after or 0.0)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from ``now`` given by a Retry-After header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def parse_delays(value: str) -> tuple[float, ...]:
    """Parse ``KIRIM_WEBHOOK_RETRY_DELAYS`` such as ``"5,300,1800"`` (seconds)."""
    parts = [p.strip() for p in value.split(",")]
    if not value.strip() or any(not p for p in parts):
        raise InvalidRetryDelays(
            f"retry delays {value!r}: expected comma-separated seconds such as '5,300,1800'"
        )
    delays: list[float] = []
    for part in parts:
        try:
            seconds = float(part)
        except ValueError as exc:
            raise InvalidRetryDelays(f"retry delay {part!r} is not a number of seconds") from exc
        if not math.isfinite(seconds) or seconds < 0:
            raise InvalidRetryDelays(f"retry delay {part!r} must be a finite number >= 0")
        delays.append(seconds)
    return tuple(delays)

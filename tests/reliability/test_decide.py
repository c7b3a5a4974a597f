"""Retry hints, expiry and the unknown outcome: the pure decision table."""

from __future__ import annotations

import random

import pytest

from service.delivery.decide import Decision, decide, retry_hint
from service.delivery.transport import Outcome, RecipientResult, Reply, Stage
from service.domain.retry import RetryPolicy
from service.domain.status import Status

POLICY = RetryPolicy(min_delay=300, max_delay=4000, lifetime=5 * 86400, jitter=0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("4.7.1 Greylisted, try again in 5 minutes", 300.0),
        ("Try again after 90 seconds", 90.0),
        ("please retry in 2 hours", 7200.0),
        ("Mailbox busy", None),
        ("try again later", None),
    ],
)
def test_retry_hint(text: str, seconds: float | None) -> None:
    assert retry_hint(text) == seconds


def _result(outcome: Outcome, text: str = "", code: int | None = 451) -> RecipientResult:
    return RecipientResult("r@example.com", outcome, Reply(code, None, text), Stage.RCPT)


def test_hint_stretches_the_delay_within_the_policy() -> None:
    d = decide(
        _result(Outcome.TEMPORARY, "try again in 30 minutes"),
        attempts=1,
        now=1000.0,
        deadline=10**9,
        policy=POLICY,
    )
    assert d.status is Status.DEFERRED and d.next_attempt_at == 1000.0 + 1800
    short = decide(
        _result(Outcome.TEMPORARY, "try again in 5 s"),
        attempts=1,
        now=0.0,
        deadline=10**9,
        policy=POLICY,
    )
    assert short.next_attempt_at == POLICY.min_delay  # never below the minimum
    long = decide(
        _result(Outcome.TEMPORARY, "try again in 9 hours"),
        attempts=1,
        now=0.0,
        deadline=10**9,
        policy=POLICY,
    )
    assert long.next_attempt_at == POLICY.max_delay


def test_temporary_never_retries_past_the_deadline() -> None:
    near = decide(_result(Outcome.TEMPORARY), attempts=3, now=100.0, deadline=150.0, policy=POLICY)
    assert near.status is Status.DEFERRED and near.next_attempt_at == 150.0
    past = decide(_result(Outcome.TEMPORARY), attempts=4, now=150.0, deadline=150.0, policy=POLICY)
    assert (past.status, past.reason, past.event) == (
        Status.FAILED,
        "expired",
        "message.failed",
    )


def _decide(r: RecipientResult, deadline: float = 10.0**9) -> Decision:
    return decide(r, attempts=1, now=0.0, deadline=deadline, policy=POLICY, rng=random.Random(1))


def test_outcomes_map_to_states() -> None:
    assert _decide(_result(Outcome.ACCEPTED, code=250)).status is Status.SENT
    bounced = _decide(_result(Outcome.PERMANENT, code=550))
    assert bounced.status is Status.BOUNCED and bounced.event == "message.bounced"
    unknown = _decide(_result(Outcome.UNKNOWN, code=None))
    assert unknown.status is Status.DEFERRED and unknown.reason == "possible_duplicate"
    # A permanent reply after the deadline is still a bounce, not an expiry.
    assert _decide(_result(Outcome.PERMANENT, code=550), deadline=0.0).status is Status.BOUNCED

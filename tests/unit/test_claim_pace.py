"""The claim size follows the worker's own rate (pure)."""

from __future__ import annotations

from service.domain.claim_pace import HOLD_SECONDS, ClaimPace


def test_an_idle_worker_claims_the_floor() -> None:
    pace = ClaimPace(1024)
    assert pace.target(0.0) == 256
    assert pace.target(10.0) == 256


def test_a_fast_worker_claims_what_it_sends_in_the_hold_time() -> None:
    pace = ClaimPace(10_000)
    pace.target(0.0)
    pace.settled(700)
    assert pace.target(0.1) == round(7_000 * HOLD_SECONDS)
    pace.settled(1200)
    assert pace.target(0.2) == round(9_500 * HOLD_SECONDS)  # the mean of 7,000 and 12,000/s


def test_the_batch_size_bounds_the_claim() -> None:
    pace = ClaimPace(1024)
    pace.target(0.0)
    pace.settled(5000)
    assert pace.target(0.1) == 1024
    small = ClaimPace(64)
    small.target(0.0)
    small.settled(5000)
    assert small.target(0.1) == 64
    assert ClaimPace(64).target(0.0) == 64


def test_a_slow_worker_falls_back_to_the_floor() -> None:
    pace = ClaimPace(10_000)
    pace.target(0.0)
    pace.settled(1000)
    assert pace.target(0.1) == round(10_000 * HOLD_SECONDS)
    for step in range(2, 12):  # nothing settles for a second
        pace.target(step / 10)
    assert pace.target(1.2) == 256


def test_rates_are_measured_over_a_window_not_single_settles() -> None:
    pace = ClaimPace(1024)
    pace.target(0.0)
    pace.settled(100)
    assert pace.target(0.001) == 256  # too soon to tell: no sample
    assert pace.rate == 0.0

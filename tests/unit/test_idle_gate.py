"""When the API process's helper may claim: only while the API is idle and mail has waited."""

from __future__ import annotations

import pytest

from service.delivery.idle_gate import IdleDeliveryGate

pytestmark = pytest.mark.asyncio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Queue:
    """``next_due`` answers from ``due`` and counts how often it was asked."""

    def __init__(self) -> None:
        self.due: float | None = None
        self.asked = 0
        self.broken = False

    async def next_due(self) -> float | None:
        self.asked += 1
        if self.broken:
            raise ConnectionError("database down")
        return self.due


def _gate(idle: list[bool], queue: Queue, clock: Clock) -> IdleDeliveryGate:
    return IdleDeliveryGate(
        lambda: idle[0],
        queue.next_due,
        quiet=0.05,
        waited=0.1,
        recheck=1.0,
        clock=clock,
        monotonic=clock,
    )


async def test_a_busy_api_never_claims_nor_asks_the_database() -> None:
    clock, queue, idle = Clock(), Queue(), [False]
    gate = _gate(idle, queue, clock)
    queue.due = clock.now - 60  # long overdue
    gate.accepted()
    assert await gate() == 0.05
    assert queue.asked == 0


async def test_claims_only_mail_that_waited_unclaimed() -> None:
    clock, queue, idle = Clock(), Queue(), [True]
    gate = _gate(idle, queue, clock)
    gate.accepted()
    queue.due = clock.now - 0.04  # the delivery processes may still take it
    assert await gate() == pytest.approx(0.06)
    queue.due = clock.now - 0.1
    assert await gate() == 0
    assert queue.asked == 2


async def test_after_an_empty_queue_it_asks_once_a_second_until_new_mail() -> None:
    clock, queue, idle = Clock(), Queue(), [True]
    gate = _gate(idle, queue, clock)
    assert await gate() == 1.0  # first look: nothing waiting
    clock.now += 0.3
    assert await gate() == pytest.approx(0.7)
    assert queue.asked == 1
    queue.due = clock.now - 5  # e.g. retries fell due
    clock.now += 0.7
    assert await gate() == 0
    assert queue.asked == 2
    queue.due = clock.now + 3600  # only scheduled mail
    gate.accepted()
    assert await gate() == 1.0
    assert await gate() == pytest.approx(1.0)
    assert queue.asked == 3  # the accept was looked at; nothing to do until the next one


async def test_a_database_error_is_a_pause_not_a_crash() -> None:
    clock, queue, idle = Clock(), Queue(), [True]
    gate = _gate(idle, queue, clock)
    queue.broken = True
    gate.accepted()
    assert await gate() == 1.0

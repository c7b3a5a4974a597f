"""Delivery slots go to the best waiting (priority, arrival), and none is ever lost."""

from __future__ import annotations

import asyncio

from service.delivery.slots import PrioritySlots


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_freed_slot_goes_to_the_best_priority_then_first_come() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    gate = asyncio.Event()

    async def job(name: str, priority: int) -> None:
        await slots.acquire(priority)
        try:
            order.append(name)
            await gate.wait()
        finally:
            slots.release()

    first = asyncio.create_task(job("first", 2))
    await _settle()
    waiting = [
        asyncio.create_task(job(name, prio))
        for name, prio in [("low1", 2), ("normal", 1), ("low2", 2), ("high", 0), ("normal2", 1)]
    ]
    await _settle()
    assert order == ["first"] and slots.waiting == 5
    gate.set()
    await asyncio.gather(first, *waiting)
    assert order == ["first", "high", "normal", "normal2", "low1", "low2"]


async def test_free_slots_are_taken_without_waiting() -> None:
    slots = PrioritySlots(3)
    for p in (2, 2, 2):
        await asyncio.wait_for(slots.acquire(p), 1)
    assert slots.waiting == 0
    blocked = asyncio.create_task(slots.acquire(0))
    await _settle()
    assert not blocked.done()
    slots.release()
    await asyncio.wait_for(blocked, 1)


async def test_a_cancelled_waiter_neither_takes_nor_loses_a_slot() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(1)
    gone = asyncio.create_task(slots.acquire(0))
    later = asyncio.create_task(slots.acquire(1))
    await _settle()
    gone.cancel()
    await _settle()
    slots.release()  # skips the cancelled waiter
    await asyncio.wait_for(later, 1)
    assert gone.cancelled()


async def test_a_waiter_cancelled_as_it_is_granted_passes_the_slot_on() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(1)
    granted = asyncio.create_task(slots.acquire(0))
    next_one = asyncio.create_task(slots.acquire(1))
    await _settle()
    slots.release()  # hands the slot to ``granted`` ...
    granted.cancel()  # ... which is cancelled before it runs again
    await asyncio.gather(granted, return_exceptions=True)
    await asyncio.wait_for(next_one, 1)
    slots.release()
    # Exactly one slot exists: it is free again, and only one.
    await asyncio.wait_for(slots.acquire(2), 1)
    extra = asyncio.create_task(slots.acquire(2))
    await _settle()
    assert not extra.done()
    extra.cancel()

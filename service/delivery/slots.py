"""Delivery slots handed out by priority: the best waiting job gets the next free one.

A worker claims recipients in batches and holds them while they wait for one of its SMTP
sessions. With a first-come queue a high-priority message claimed after a few hundred low
ones would wait for all of them; here a freed slot goes to the waiter with the best
(priority, arrival) instead, so it waits only for a session to finish.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Protocol


class PrioritySlots:
    """Like ``asyncio.Semaphore(n)``, but waiters are served by priority (lower first),
    then in arrival order."""

    def __init__(self, n: int) -> None:
        self._free = max(1, n)
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for *_, fut in self._waiters if not fut.done())

    async def acquire(self, priority: int) -> None:
        if self._free > 0:
            # Nobody can be waiting while a slot is free: release hands slots over directly.
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._arrivals), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Handed a slot in the same moment it was cancelled: pass it on.
                self.release()
            raise  # a cancelled future stays in the heap and is skipped by release

    def release(self) -> None:
        while self._waiters:
            *_, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1


class Releasable(Protocol):
    def release(self) -> None: ...


class ReleaseOnce:
    """One slot taken from ``slots``, given back once: when the send hands its session on
    (and waits only for a reply), or when it ends, whichever comes first."""

    __slots__ = ("_slots",)

    def __init__(self, slots: Releasable) -> None:
        self._slots: Releasable | None = slots

    @property
    def released(self) -> bool:
        return self._slots is None

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.release()

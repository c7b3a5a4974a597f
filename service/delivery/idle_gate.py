"""When the API process of ``kirim serve`` may deliver too: its requests have stopped and
mail is waiting that the delivery processes have not reached.

After a burst of accepts (a few batch requests of 500) the API's core has nothing to do
while the delivery process works through the backlog alone. A worker in the API process,
gated by this, takes a share of that backlog; it never claims while a request is being
served, so accepts keep their core, and never for a trickle, which the delivery
processes claim within milliseconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class IdleDeliveryGate:
    def __init__(
        self,
        api_idle: Callable[[], bool],
        next_due: Callable[[], Awaitable[float | None]],
        *,
        quiet: float = 0.05,
        waited: float = 0.1,
        recheck: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``api_idle``: no request in progress or just ended; while one is, ask again
        after ``quiet`` seconds. ``next_due``: when the earliest claimable recipient is due
        (None: none is). ``waited``: how long a due recipient must have gone unclaimed.
        ``recheck``: how often the database is asked while nothing was accepted since it
        last showed no backlog."""
        self._api_idle = api_idle
        self._next_due = next_due
        self._quiet = quiet
        self._waited = waited
        self._recheck = recheck
        self._clock = clock
        self._monotonic = monotonic
        self._accepted = False  # mail committed since the backlog was last seen empty
        self._asked_at = float("-inf")

    def accepted(self) -> None:
        """Called after each accept commits."""
        self._accepted = True

    async def __call__(self) -> float:
        """Seconds to wait before asking again; 0: claim now."""
        if not self._api_idle():
            return self._quiet
        since = self._monotonic() - self._asked_at
        if not self._accepted and since < self._recheck:
            return self._recheck - since
        self._asked_at = self._monotonic()
        try:
            due = await self._next_due()
        except Exception as exc:  # the helper must outlive a database outage
            log.warning("idle delivery: could not read the queue: %s", exc)
            return self._recheck
        now = self._clock()
        if due is None or due > now:
            self._accepted = False  # nothing waiting: ask the database again only later
            return self._recheck
        return max(0.0, due + self._waited - now)

"""What the queue looks like right now, in a few cheap grouped queries.

The main query walks the partial index of claimable recipients (``ix_recipients_due``), so
its cost grows with the queue, not with the history. Scrapes share one result for a few
seconds so that several scrapers, or a fast one, cost one query.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import case, func, select

from service.db.engine import Database
from service.db.tables import delivery_pauses, recipients, webhook_deliveries
from service.domain.status import CLAIMABLE, Status

_CLAIMABLE = [s.value for s in CLAIMABLE]


@dataclass(frozen=True, slots=True)
class PriorityRow:
    due: int
    waiting: int
    oldest_due_age: float


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    at: float
    by_priority: dict[int, PriorityRow]
    sending: int
    webhooks_pending: int
    pauses: dict[str, int] = field(default_factory=dict)


async def read_snapshot(db: Database, now: float) -> QueueSnapshot:
    is_due = recipients.c.next_attempt_at <= now
    q = (
        select(
            recipients.c.priority,
            func.sum(case((is_due, 1), else_=0)),
            func.count(),
            func.min(case((is_due, recipients.c.next_attempt_at), else_=None)),
        )
        .where(recipients.c.status.in_(_CLAIMABLE))
        .group_by(recipients.c.priority)
    )
    sending_q = select(func.count()).where(recipients.c.status == Status.SENDING.value)
    hooks_q = select(func.count()).where(webhook_deliveries.c.status == "pending")
    pauses_q = select(delivery_pauses.c.kind, func.count()).group_by(delivery_pauses.c.kind)
    async with db.read() as conn:
        rows = (await conn.execute(q)).all()
        sending = (await conn.execute(sending_q)).scalar() or 0
        hooks = (await conn.execute(hooks_q)).scalar() or 0
        pauses = {k: int(n) for k, n in (await conn.execute(pauses_q)).all()}
    by_priority = {p: PriorityRow(0, 0, 0.0) for p in (0, 1, 2)}
    for prio, due, total, oldest in rows:
        due = int(due or 0)
        by_priority[int(prio)] = PriorityRow(
            due=due,
            waiting=int(total) - due,
            oldest_due_age=max(0.0, now - float(oldest)) if oldest is not None else 0.0,
        )
    return QueueSnapshot(now, by_priority, int(sending), int(hooks), pauses)


class CachedSnapshot:
    """Shares one snapshot between scrapes for ``max_age`` seconds; one query at a time."""

    def __init__(
        self, db: Database, *, max_age: float = 2.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._max_age = max_age
        self._clock = clock
        self._last: QueueSnapshot | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> QueueSnapshot:
        async with self._lock:
            now = self._clock()
            if self._last is None or now - self._last.at > self._max_age:
                self._last = await read_snapshot(self._db, now)
            return self._last

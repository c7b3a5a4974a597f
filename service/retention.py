"""Retention: clear old message bodies and delete old attempts, events and webhook deliveries.

Only finished messages are touched (no recipient still waiting or sending), so nothing a
pending delivery or retry needs disappears. Each batch finds its rows on a reader
connection and changes them by id in a short write transaction, with a pause between
batches: on SQLite the single writer is never held for longer than one small batch, so
accepts and settles keep flowing while a large backlog is pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, exists, select, update

from service.db.engine import Database
from service.db.event_seq import raise_floors
from service.db.status_sets import HOOK_FINISHED, one_of
from service.db.tables import attempts, events, messages, recipients
from service.db.tables import webhook_attempts as wa
from service.db.tables import webhook_deliveries as wd
from service.domain.status import CLAIMABLE, Status
from service.observability import record
from service.settings import Settings

log = logging.getLogger(__name__)

_ACTIVE = [s.value for s in CLAIMABLE] + [Status.SENDING.value]
_HOOK_ACTIVE = ("pending", "delivering")
KINDS = ("bodies", "attempts", "events", "webhook_deliveries")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Ages in seconds; 0 keeps that kind forever."""

    bodies: float
    attempts: float
    events: float
    webhook_deliveries: float
    batch_size: int = 500
    pause: float = 0.05  # between batches: lets queued writes through


def policy_from(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(
        bodies=settings.retain_bodies,
        attempts=settings.retain_attempts,
        events=settings.retain_events,
        webhook_deliveries=settings.retain_webhook_deliveries,
        batch_size=settings.retention_batch_size,
    )


def _finished(message_id_col: Any) -> Any:
    """The message of ``message_id_col`` has no recipient still in flight."""
    return ~exists().where(
        recipients.c.message_id == message_id_col, recipients.c.status.in_(_ACTIVE)
    )


async def _ids(db: Database, stmt: Any) -> list[Any]:
    async with db.read() as conn:
        return list((await conn.execute(stmt)).scalars().all())


async def prune_batch(db: Database, kind: str, cutoff: float, limit: int) -> int:
    """One batch of ``kind`` older than ``cutoff``; returns how many rows changed."""
    if kind == "bodies":
        ids = await _ids(
            db,
            select(messages.c.id)
            .where(
                messages.c.mime.is_not(None),
                messages.c.created_at < cutoff,
                _finished(messages.c.id),
            )
            .order_by(messages.c.created_at)
            .limit(limit),
        )
        if not ids:
            return 0
        async with db.write() as conn:
            res = await conn.execute(
                update(messages)
                .where(messages.c.id.in_(ids), messages.c.mime.is_not(None))
                .values(mime=None)
            )
        return res.rowcount or 0
    if kind == "attempts":
        ids = await _ids(
            db,
            select(attempts.c.id)
            .where(attempts.c.started_at < cutoff, _finished(attempts.c.message_id))
            .order_by(attempts.c.started_at)
            .limit(limit),
        )
        if not ids:
            return 0
        async with db.write() as conn:
            res = await conn.execute(delete(attempts).where(attempts.c.id.in_(ids)))
        return res.rowcount or 0
    if kind == "events":
        busy = select(wd.c.event_id).where(
            wd.c.status.in_(_HOOK_ACTIVE), wd.c.event_id.is_not(None)
        )
        ids = await _ids(
            db,
            select(events.c.id)
            .where(
                events.c.created_at < cutoff,
                _finished(events.c.message_id),
                events.c.id.not_in(busy),
            )
            .order_by(events.c.created_at)
            .limit(limit),
        )
        if not ids:
            return 0
        async with db.write() as conn:
            # A late event (a bounce report) continues the numbering of the deleted ones.
            await conn.execute(raise_floors(ids))
            res = await conn.execute(delete(events).where(events.c.id.in_(ids)))
        return res.rowcount or 0
    if kind == "webhook_deliveries":
        ids = await _ids(
            db,
            select(wd.c.id)
            .where(one_of(wd.c.status, HOOK_FINISHED), wd.c.updated_at < cutoff)
            .order_by(wd.c.updated_at)
            .limit(limit),
        )
        if not ids:
            return 0
        async with db.write() as conn:
            await conn.execute(delete(wa).where(wa.c.delivery_id.in_(ids)))
            res = await conn.execute(
                delete(wd).where(wd.c.id.in_(ids), one_of(wd.c.status, HOOK_FINISHED))
            )
        return res.rowcount or 0
    raise ValueError(f"unknown retention kind {kind!r}")


async def prune(
    db: Database,
    policy: RetentionPolicy,
    *,
    now: float,
    max_batches: int = 10_000,
    stop: asyncio.Event | None = None,
) -> dict[str, int]:
    """Prune every kind whose age is set, batch by batch; returns the counts per kind."""
    ages = {
        "bodies": policy.bodies,
        "attempts": policy.attempts,
        "events": policy.events,
        "webhook_deliveries": policy.webhook_deliveries,
    }
    done = {k: 0 for k in KINDS}
    for kind, age in ages.items():
        if age <= 0:
            continue
        for _ in range(max_batches):
            if stop is not None and stop.is_set():
                return done
            n = await prune_batch(db, kind, now - age, policy.batch_size)
            done[kind] += n
            record.pruned(kind, n)
            if n < policy.batch_size:
                break
            await asyncio.sleep(policy.pause)
    return done


async def run_periodically(
    db: Database,
    policy: RetentionPolicy,
    stop: asyncio.Event,
    *,
    interval: float,
    clock: Callable[[], float] = time.time,
) -> None:
    """The worker process's retention loop; errors are logged and retried next round."""
    while not stop.is_set():
        try:
            counts = await prune(db, policy, now=clock(), stop=stop)
            if any(counts.values()):
                log.info("retention pruned", extra={"event": "retention", **counts})
        except Exception as exc:
            log.warning("retention failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)

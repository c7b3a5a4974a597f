"""The webhook outbox as a queue: claim due deliveries, settle attempts, reap lost leases.

Same machinery as the SMTP queue (``service.db.queue``): one ``UPDATE … RETURNING`` claim
with a lease token (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), settles fenced by that
token, short transactions, never held across HTTP. The claim also enforces the
per-endpoint concurrency cap across all processes: an endpoint's in-flight deliveries
(``delivering`` rows) count against its slots, so a slow or dead endpoint holds at most
``per_endpoint`` of them and every other endpoint's deliveries still get claimed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update

from service.db.engine import Database
from service.db.leases import still_held
from service.db.tables import events, webhook_attempts, webhook_deliveries, webhook_endpoints

PENDING = "pending"
DELIVERING = "delivering"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

_D = webhook_deliveries
_E = webhook_endpoints


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: str
    endpoint_id: str
    event_id: int | None
    event_type: str
    webhook_id: str
    payload: dict[str, Any] | None
    attempts: int  # attempts before this one


@dataclass(frozen=True, slots=True)
class EndpointRow:
    id: str
    url: str
    secrets: list[dict[str, Any]]
    enabled: bool


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    type: str
    created_at: float
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One attempt's outcome, ready to write. ``status`` is the delivery's next status."""

    delivery_id: str
    token: str
    endpoint_id: str
    number: int
    at: float
    status: str
    next_attempt_at: float | None
    status_code: int | None
    latency: float
    error: str | None
    response: str
    gone: bool = False  # the endpoint answered 410: disable it
    attempted: bool = True  # False when nothing was sent (endpoint deleted or disabled)


async def claim(
    db: Database,
    *,
    token: str,
    limit: int,
    per_endpoint: int,
    lease_seconds: float,
    now: float,
) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due deliveries, oldest first, at most ``per_endpoint`` each."""
    busy = (
        select(_D.c.endpoint_id, func.count().label("n"))
        .where(_D.c.status == DELIVERING)
        .group_by(_D.c.endpoint_id)
        .subquery("busy")
    )
    due = _D.alias("due")
    slot = func.row_number().over(
        partition_by=due.c.endpoint_id, order_by=(due.c.next_attempt_at, due.c.id)
    ) + func.coalesce(busy.c.n, 0)
    ranked = (
        select(due.c.id, due.c.next_attempt_at, slot.label("slot"))
        .select_from(due.outerjoin(busy, busy.c.endpoint_id == due.c.endpoint_id))
        .where(due.c.status == PENDING, due.c.next_attempt_at <= now)
        .subquery("ranked")
    )
    pick = (
        select(ranked.c.id)
        .where(ranked.c.slot <= per_endpoint)
        .order_by(ranked.c.next_attempt_at)
        .limit(limit)
    )
    lockable = _D.alias("lockable")
    target = select(lockable.c.id).where(
        lockable.c.id.in_(pick.scalar_subquery()), lockable.c.status == PENDING
    )
    if not db.is_sqlite:
        target = target.with_for_update(skip_locked=True)
    stmt = (
        update(_D)
        .where(_D.c.id.in_(target.scalar_subquery()))
        .values(
            status=DELIVERING,
            lease_token=token,
            lease_expires_at=now + lease_seconds,
            updated_at=now,
        )
        .returning(
            _D.c.id,
            _D.c.endpoint_id,
            _D.c.event_id,
            _D.c.event_type,
            _D.c.webhook_id,
            _D.c.payload,
            _D.c.attempts,
        )
    )
    async with db.write() as conn:
        rows = (await conn.execute(stmt)).all()
    return [ClaimedDelivery(*row) for row in rows]


async def load(
    db: Database, claimed: Sequence[ClaimedDelivery]
) -> tuple[dict[str, EndpointRow], dict[int, EventRow]]:
    """The endpoints and events the claimed deliveries need (two queries)."""
    endpoint_ids = sorted({c.endpoint_id for c in claimed})
    event_ids = sorted({c.event_id for c in claimed if c.event_id is not None})
    async with db.read() as conn:
        eps = (
            await conn.execute(
                select(_E.c.id, _E.c.url, _E.c.secrets, _E.c.enabled).where(
                    _E.c.id.in_(endpoint_ids)
                )
            )
        ).all()
        evs: Sequence[Any] = []
        if event_ids:
            evs = (
                await conn.execute(
                    select(events.c.id, events.c.type, events.c.created_at, events.c.data).where(
                        events.c.id.in_(event_ids)
                    )
                )
            ).all()
    return (
        {r[0]: EndpointRow(r[0], r[1], list(r[2] or []), bool(r[3])) for r in eps},
        {r[0]: EventRow(r[0], r[1], r[2], dict(r[3] or {})) for r in evs},
    )


async def settle(
    db: Database, *, results: Sequence[AttemptResult], now: float, disable_after: float
) -> list[str]:
    """Write attempts in one transaction, fenced by lease token; returns the settled ids.

    Also keeps each endpoint's failure run: a success clears ``failing_since``; a failure
    starts it; a 410, or failures for ``disable_after`` seconds, disable the endpoint and
    cancel its pending deliveries (the events stay, ready for a replay).
    """
    if not results:
        return []
    async with db.write() as conn:
        held = await still_held(
            conn, _D, [r.delivery_id for r in results], status=DELIVERING, is_sqlite=db.is_sqlite
        )
        live = [r for r in results if (r.delivery_id, r.token) in held]
        if not live:
            return []
        await conn.execute(
            update(_D)
            .where(_D.c.id == bindparam("b_id"))
            .values(
                status=bindparam("b_status"),
                attempts=bindparam("b_attempts"),
                next_attempt_at=func.coalesce(
                    bindparam("b_next", type_=_D.c.next_attempt_at.type), _D.c.next_attempt_at
                ),
                lease_token=None,
                lease_expires_at=None,
                last_status_code=bindparam("b_code"),
                last_error=bindparam("b_error"),
                last_latency=bindparam("b_latency"),
                last_response=bindparam("b_response"),
                updated_at=now,
            ),
            [
                {
                    "b_id": r.delivery_id,
                    "b_status": r.status,
                    "b_attempts": r.number if r.attempted else r.number - 1,
                    "b_next": r.next_attempt_at,
                    "b_code": r.status_code,
                    "b_error": r.error,
                    "b_latency": r.latency if r.attempted else None,
                    "b_response": r.response,
                }
                for r in live
            ],
        )
        tried = [r for r in live if r.attempted]
        if tried:
            await conn.execute(
                webhook_attempts.insert(),
                [
                    {
                        "delivery_id": r.delivery_id,
                        "number": r.number,
                        "at": r.at,
                        "status_code": r.status_code,
                        "latency": r.latency,
                        "error": r.error,
                        "response": r.response,
                    }
                    for r in tried
                ],
            )
        await _endpoint_health(conn, tried, now, disable_after)
    return [r.delivery_id for r in live]


async def _endpoint_health(
    conn: Any, tried: Sequence[AttemptResult], now: float, disable_after: float
) -> None:
    ok = {r.endpoint_id for r in tried if r.status == SUCCEEDED}
    gone = {r.endpoint_id for r in tried if r.gone}
    failing = {r.endpoint_id for r in tried if r.status != SUCCEEDED and not r.gone} - ok
    disabled: dict[str, str] = {}
    if failing:
        await conn.execute(
            update(_E)
            .where(_E.c.id.in_(sorted(failing)), _E.c.failing_since.is_(None))
            .values(failing_since=now)
        )
        stale = await conn.execute(
            update(_E)
            .where(
                _E.c.id.in_(sorted(failing)),
                _E.c.enabled,
                _E.c.failing_since <= now - disable_after,
            )
            .values(
                enabled=False,
                disabled_reason=f"every attempt failed for {disable_after:g}s",
                updated_at=now,
            )
            .returning(_E.c.id, _E.c.disabled_reason)
        )
        disabled.update({r[0]: r[1] for r in stale.all()})
    if gone:
        reason = "the endpoint answered 410 Gone"
        await conn.execute(
            update(_E)
            .where(_E.c.id.in_(sorted(gone)))
            .values(enabled=False, disabled_reason=reason, updated_at=now)
        )
        disabled.update({g: reason for g in gone})
    if ok:
        await conn.execute(update(_E).where(_E.c.id.in_(sorted(ok))).values(failing_since=None))
    for endpoint_id, reason in disabled.items():
        await cancel_pending(conn, endpoint_id, f"endpoint disabled: {reason}", now)


async def cancel_pending(conn: Any, endpoint_id: str, why: str, now: float) -> int:
    result = await conn.execute(
        update(_D)
        .where(_D.c.endpoint_id == endpoint_id, _D.c.status == PENDING)
        .values(status=CANCELLED, last_error=why, updated_at=now)
    )
    return int(result.rowcount or 0)


async def release(db: Database, *, token: str, ids: Sequence[str], now: float) -> int:
    """Give back claims that were not finished (shutdown); the attempt will run again."""
    if not ids:
        return 0
    stmt = (
        update(_D)
        .where(_D.c.id.in_(list(ids)), _D.c.lease_token == token, _D.c.status == DELIVERING)
        .values(status=PENDING, lease_token=None, lease_expires_at=None, updated_at=now)
    )
    async with db.write() as conn:
        return int((await conn.execute(stmt)).rowcount or 0)


async def reap(db: Database, *, now: float) -> int:
    """Return deliveries whose lease expired (their process died) to the queue."""
    stmt = (
        update(_D)
        .where(_D.c.status == DELIVERING, _D.c.lease_expires_at < now)
        .values(
            status=PENDING,
            lease_token=None,
            lease_expires_at=None,
            next_attempt_at=now,
            updated_at=now,
        )
    )
    async with db.write() as conn:
        return int((await conn.execute(stmt)).rowcount or 0)


async def next_due(db: Database) -> float | None:
    stmt = select(func.min(_D.c.next_attempt_at)).where(_D.c.status == PENDING)
    async with db.read() as conn:
        value = (await conn.execute(stmt)).scalar()
    return None if value is None else float(value)

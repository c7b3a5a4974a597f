"""The database as the queue: claim due recipients, settle results, reap lost leases.

Each function is one short transaction; none is held across network I/O. Statements work
on many rows at once so their cost does not grow with the batch.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Integer,
    bindparam,
    exists,
    func,
    literal,
    select,
    true,
    union_all,
    update,
)

from service.admin.pauses import domain_matches, unpaused
from service.db.engine import Database
from service.db.event_seq import last_seqs
from service.db.leases import still_held
from service.db.plain_insert import insert_rows
from service.db.plain_statement import PlainStatement, padded_length
from service.db.status_sets import CLAIMABLE, one_of
from service.db.suppressions import suppress_hard_bounces
from service.db.tables import attempts, delivery_pauses, messages, recipients
from service.domain.fair_share import FairClaim, Rotation, interleave
from service.domain.status import Status
from service.webhooks.outbox import record_events


def _claimable() -> Any:
    """SQL: the row can be claimed, in the words of the due indexes' own condition."""
    return one_of(recipients.c.status, CLAIMABLE)


@dataclass(slots=True, init=False)  # a value, not frozen: see service/native.py
class Claimed:
    """A recipient leased to this worker, with what is needed to send it."""

    id: str
    message_id: str
    tenant_id: str
    email: str
    attempts: int  # attempts before this one
    deadline: float
    lease_lost: bool
    # An earlier attempt may already have delivered it (lost after the final dot).
    possible_duplicate: bool = False
    priority: int = 1  # 0 high, 1 normal, 2 low
    size: int = 0  # bytes of the message's MIME, so bodies can be loaded within a budget

    def __init__(
        self,
        id: str,
        message_id: str,
        tenant_id: str,
        email: str,
        attempts: int,
        deadline: float,
        lease_lost: bool,
        possible_duplicate: bool = False,
        priority: int = 1,
        size: int = 0,
    ) -> None:
        self.id = id
        self.message_id = message_id
        self.tenant_id = tenant_id
        self.email = email
        self.attempts = attempts
        self.deadline = deadline
        self.lease_lost = lease_lost
        self.possible_duplicate = possible_duplicate
        self.priority = priority
        self.size = size


@dataclass(slots=True, init=False)  # a value, not frozen: see service/native.py
class MessageBody:
    id: str
    tenant_id: str
    sender: str
    mime: bytes
    smtputf8: bool
    tags: list[str]
    metadata: dict[str, Any]
    traceparent: str | None = None

    def __init__(
        self,
        id: str,
        tenant_id: str,
        sender: str,
        mime: bytes,
        smtputf8: bool,
        tags: list[str],
        metadata: dict[str, Any],
        traceparent: str | None = None,
    ) -> None:
        self.id = id
        self.tenant_id = tenant_id
        self.sender = sender
        self.mime = mime
        self.smtputf8 = smtputf8
        self.tags = tags
        self.metadata = metadata
        self.traceparent = traceparent


@dataclass(slots=True, init=False)
class Settlement:
    """The outcome of one recipient's attempt, ready to write."""

    recipient_id: str
    token: str  # the lease this result was obtained under
    message_id: str
    tenant_id: str
    email: str
    status: str
    attempt_number: int
    next_attempt_at: float | None
    reason: str
    event_type: str
    outcome: str
    stage: str
    code: int | None
    enhanced: str | None
    reply: str
    started_at: float
    duration: float
    possible_duplicate: bool
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    attempted: bool = True  # False when settled without SMTP (expired before the try)
    traceparent: str | None = None  # the message's, for the attempt's log line

    def __init__(
        self,
        recipient_id: str,
        token: str,
        message_id: str,
        tenant_id: str,
        email: str,
        status: str,
        attempt_number: int,
        next_attempt_at: float | None,
        reason: str,
        event_type: str,
        outcome: str,
        stage: str,
        code: int | None,
        enhanced: str | None,
        reply: str,
        started_at: float,
        duration: float,
        possible_duplicate: bool,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        attempted: bool = True,
        traceparent: str | None = None,
    ) -> None:
        self.recipient_id = recipient_id
        self.token = token
        self.message_id = message_id
        self.tenant_id = tenant_id
        self.email = email
        self.status = status
        self.attempt_number = attempt_number
        self.next_attempt_at = next_attempt_at
        self.reason = reason
        self.event_type = event_type
        self.outcome = outcome
        self.stage = stage
        self.code = code
        self.enhanced = enhanced
        self.reply = reply
        self.started_at = started_at
        self.duration = duration
        self.possible_duplicate = possible_duplicate
        self.tags = [] if tags is None else tags
        self.metadata = {} if metadata is None else metadata
        self.attempted = attempted
        self.traceparent = traceparent


async def claim(
    db: Database,
    *,
    owner: str,
    token: str,
    limit: int,
    lease_seconds: float,
    now: float,
    rotation: Rotation | None = None,
    max_priority: int | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` due recipients: every due high-priority one before any normal
    one before any low one, and within a priority an even share for each tenant.

    Within a tenant and priority the oldest due go first. ``rotation`` (kept by the caller
    between claims) decides which tenants get the spare rows of an uneven split. The result
    is in the order to send: by priority, tenants taking turns. ``max_priority`` leaves out
    rows of a lower priority (a larger number).
    """
    if limit <= 0:
        return []
    lease = {"b_now": now, "b_owner": owner, "b_token": token, "b_expires": now + lease_seconds}
    rows: list[Any] = []
    async with db.write() as conn:
        due: list[tuple[int, str]] = [
            (p, t)
            for p, t in await _DUE_PAIRS.rows(conn, {"b_now": now})
            if max_priority is None or p <= max_priority
        ]
        plan = FairClaim(limit, due, rotation)
        while (step := plan.next_round()) is not None:
            priority, quotas = step
            stmt = _take(padded_length(len(quotas)), db.is_sqlite)
            params = {**lease, "b_priority": priority}
            for i, (tenant, quota) in enumerate(quotas.items()):
                params[f"b_t{i}"], params[f"b_q{i}"] = tenant, quota
            for i in range(len(quotas), padded_length(len(quotas))):
                params[f"b_t{i}"], params[f"b_q{i}"] = "", 0  # LIMIT 0: nothing, at once
            taken = await stmt.rows(conn, params)
            plan.record(Counter(r[2] for r in taken))  # by tenant_id
            rows += taken
    claimed = [Claimed(*r) for r in rows]
    return sorted(
        interleave(claimed, key=lambda c: (c.priority, c.tenant_id)), key=lambda c: c.priority
    )


def _domain_unpaused() -> Any:
    """SQL: the recipient's domain is not paused (``unpaused()`` without the tenant test)."""
    dp = delivery_pauses
    return ~exists().where(dp.c.kind == "domain", domain_matches(dp.c.value))


def _due_pairs() -> Any:
    """SQL: each (priority, tenant) with a row due at ``:b_now``, paused tenants left out.

    Loose index scans, so the cost grows with the number of tenants, not with the backlog:
    the tenants (each step seeks the first one after the previous), the priorities in use
    (the same over ix_recipients_due), then one seek per pair for its earliest row; the
    pair is due if that row is.
    """
    r = recipients
    claimable = _claimable()

    def loose_scan(col: Any, name: str) -> Any:
        def first(*after: Any) -> Any:
            return select(col).where(claimable, *after).order_by(col).limit(1).scalar_subquery()

        seen = select(first().label(name)).cte(f"due_{name}", recursive=True)
        step = select(first(col > seen.c[name])).where(seen.c[name].is_not(None))
        return seen.union_all(step)

    tenants = loose_scan(r.c.tenant_id, "tenant_id")
    levels = loose_scan(r.c.priority, "priority")
    first_due = (
        select(r.c.next_attempt_at)
        .where(claimable, r.c.tenant_id == tenants.c.tenant_id, r.c.priority == levels.c.priority)
        .order_by(r.c.next_attempt_at)
        .limit(1)
        .scalar_subquery()
    )
    dp = delivery_pauses
    paused = exists().where(dp.c.kind == "tenant", dp.c.value == tenants.c.tenant_id)
    every_pair = tenants.join(levels, true())
    return (
        select(levels.c.priority, tenants.c.tenant_id)
        .select_from(every_pair)
        .where(
            tenants.c.tenant_id.is_not(None),
            levels.c.priority.is_not(None),
            ~paused,
            first_due <= bindparam("b_now"),
        )
    )


_DUE_PAIRS = PlainStatement(_due_pairs())


@functools.lru_cache(maxsize=32)
def _take(tenants: int, is_sqlite: bool) -> PlainStatement:
    """SQL: lease the ``:b_q<i>`` oldest recipients of tenant ``:b_t<i>`` due at ``:b_now`` at
    ``:b_priority``, for ``i`` below ``tenants``; returns the fields of ``Claimed``."""
    r = recipients
    parts = []
    for i in range(tenants):
        oldest = (
            select(r.c.id)
            .where(
                _claimable(),
                r.c.tenant_id == bindparam(f"b_t{i}"),
                r.c.priority == bindparam("b_priority"),
                r.c.next_attempt_at <= bindparam("b_now"),
                # Paused tenants were left out when the pairs were found. Testing that again
                # here would mislead PostgreSQL's planner into sorting the tenant's whole
                # backlog (it infers the pause for this one tenant is likely to exist).
                _domain_unpaused(),
            )
            .order_by(r.c.next_attempt_at)
            .limit(bindparam(f"b_q{i}", type_=Integer))
        )
        if not is_sqlite:
            # Concurrent workers skip each other's rows. PostgreSQL refuses FOR UPDATE in a
            # UNION member itself, so it sits in a sub-select.
            oldest = oldest.with_for_update(skip_locked=True)
        # A sub-select either way: SQLite allows no LIMIT on a bare UNION member.
        parts.append(select(oldest.subquery().c.id))
    ids = parts[0] if len(parts) == 1 else union_all(*parts)
    take = (
        update(recipients)
        .where(recipients.c.id.in_(ids))
        .values(
            status=Status.SENDING.value,
            lease_owner=bindparam("b_owner"),
            lease_token=bindparam("b_token"),
            lease_expires_at=bindparam("b_expires"),
            updated_at=bindparam("b_now"),
        )
        .returning(
            recipients.c.id,
            recipients.c.message_id,
            recipients.c.tenant_id,
            recipients.c.email,
            recipients.c.attempts,
            recipients.c.deadline,
            recipients.c.lease_lost,
            recipients.c.possible_duplicate,
            recipients.c.priority,
            # One seek per row here rather than a query of its own for the sizes.
            select(messages.c.size)
            .where(messages.c.id == recipients.c.message_id)
            .scalar_subquery(),
        )
    )
    return PlainStatement(take)


async def load_bodies(db: Database, message_ids: Sequence[str]) -> dict[str, MessageBody]:
    if not message_ids:
        return {}
    async with db.read() as conn:
        rows = await _BODIES.rows(conn, {"b_ids": list(message_ids)})
    return {r[0]: MessageBody(*r) for r in rows}


_BODIES = PlainStatement(
    select(
        messages.c.id,
        messages.c.tenant_id,
        messages.c.sender,
        messages.c.mime,
        messages.c.smtputf8,
        messages.c.tags,
        messages.c.metadata,
        messages.c.traceparent,
    ).where(messages.c.id.in_(bindparam("b_ids", expanding=True)))
)


async def extend_leases(
    db: Database, *, tokens: Sequence[str], lease_seconds: float, now: float
) -> int:
    """Heartbeat: push the lease of every row still held under ``tokens``."""
    if not tokens:
        return 0
    stmt = (
        update(recipients)
        .where(
            recipients.c.lease_token.in_(list(tokens)),
            recipients.c.status == Status.SENDING.value,
        )
        .values(lease_expires_at=now + lease_seconds)
    )
    async with db.write() as conn:
        return (await conn.execute(stmt)).rowcount or 0


async def release(db: Database, *, token: str, ids: Sequence[str], now: float) -> int:
    """Give back claims that were never started (graceful shutdown)."""
    return await _give_back(db, token, ids, now, status=Status.QUEUED.value)


async def abandon(db: Database, *, token: str, ids: Sequence[str], now: float) -> int:
    """Return claims whose session was cut off (shutdown) to the queue at once.

    Like the reaper, but without waiting for the lease to expire; the session may have got
    past the final dot, so the next attempt is flagged as a possible duplicate.
    """
    return await _give_back(
        db, token, ids, now, status=Status.DEFERRED.value, lease_lost=True, next_attempt_at=now
    )


async def _give_back(
    db: Database, token: str, ids: Sequence[str], now: float, **values: Any
) -> int:
    """End this worker's lease on ``ids`` (only rows it still holds) with ``values``."""
    if not ids:
        return 0
    stmt = (
        update(recipients)
        .where(
            recipients.c.id.in_(list(ids)),
            recipients.c.lease_token == token,
            recipients.c.status == Status.SENDING.value,
        )
        .values(lease_owner=None, lease_token=None, lease_expires_at=None, updated_at=now, **values)
    )
    async with db.write() as conn:
        return (await conn.execute(stmt)).rowcount or 0


async def reap(db: Database, *, now: float) -> int:
    """Return recipients whose lease expired to the queue, flagged as possible duplicates.

    The owner died or stalled somewhere in its attempt; it may have got as far as the final
    dot, so the next attempt is marked as a possible duplicate rather than assumed clean.
    """
    stmt = (
        update(recipients)
        .where(
            recipients.c.status == Status.SENDING.value,
            recipients.c.lease_expires_at < now,
        )
        .values(
            status=Status.DEFERRED.value,
            lease_owner=None,
            lease_token=None,
            lease_expires_at=None,
            lease_lost=True,
            next_attempt_at=now,
            updated_at=now,
        )
    )
    async with db.write() as conn:
        return (await conn.execute(stmt)).rowcount or 0


async def settle(db: Database, *, items: Sequence[Settlement], now: float) -> list[str]:
    """Write results in one transaction, each fenced by the lease token it was sent under.

    Returns the ids that were settled; results for rows this worker no longer holds (its
    lease expired and another worker took over) are dropped, so a stale worker cannot
    overwrite the current owner's state.
    """
    if not items:
        return []
    if db.is_sqlite:
        # The UPDATE is fenced itself (id, token and status in its WHERE): when it changes
        # every row, all were still held and no SELECT was needed. Otherwise (a lease was
        # lost, rarely) the transaction is rolled back, its connection replaced, and the
        # results are sorted below as on PostgreSQL.
        with contextlib.suppress(_NotAllHeld):
            async with db.write() as conn:
                changed = await _SETTLE_RECIPIENT.executemany(conn, _settle_rows(items, now))
                if changed != len(items):
                    raise _NotAllHeld
                await _record(conn, db, items, now)
                return [s.recipient_id for s in items]
    # PostgreSQL locks the held rows (FOR UPDATE) before it writes them.
    async with db.write() as conn:
        held = await still_held(
            conn, recipients, [s.recipient_id for s in items], status=Status.SENDING.value,
            is_sqlite=db.is_sqlite,
        )  # fmt: skip
        live = [s for s in items if (s.recipient_id, s.token) in held]
        if not live:
            return []
        await _SETTLE_RECIPIENT.executemany(conn, _settle_rows(live, now))
        await _record(conn, db, live, now)
    return [s.recipient_id for s in live]


class _NotAllHeld(Exception):
    """A fenced settle changed fewer rows than it had results (undoes its transaction)."""


def _settle_rows(items: Sequence[Settlement], now: float) -> list[dict[str, Any]]:
    return [
        {
            "b_id": s.recipient_id,
            "b_token": s.token,
            "b_status": s.status,
            "b_attempts": s.attempt_number,
            "b_next": s.next_attempt_at,
            "b_dup": s.possible_duplicate,
            "b_reason": s.reason,
            "b_code": s.code,
            "b_enhanced": s.enhanced,
            "b_reply": s.reply,
            "b_stage": s.stage,
            "b_sent_at": now if s.status == Status.SENT.value else None,
            "b_now": now,
        }
        for s in items
    ]


async def _record(conn: Any, db: Database, live: Sequence[Settlement], now: float) -> None:
    """The attempts, events (with their webhook deliveries) and suppressions of settled
    results, in the settle's transaction."""
    tried = [s for s in live if s.attempted]
    await insert_rows(
        conn,
        attempts,
        [
            {
                "recipient_id": s.recipient_id,
                "message_id": s.message_id,
                "number": s.attempt_number,
                "started_at": s.started_at,
                "duration": s.duration,
                "outcome": s.outcome,
                "stage": s.stage,
                "code": s.code,
                "enhanced": s.enhanced,
                "reply": s.reply,
                "possible_duplicate": s.possible_duplicate,
                "worker": s.token[:64],
            }
            for s in tried
        ],
    )
    await _write_events(conn, db, live, now)
    await suppress_hard_bounces(conn, db.is_sqlite, live, now)


_SETTLE_RECIPIENT = PlainStatement(
    update(recipients)
    .where(
        recipients.c.id == bindparam("b_id"),
        recipients.c.lease_token == bindparam("b_token"),
        recipients.c.status == Status.SENDING.value,
    )
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        next_attempt_at=func.coalesce(
            bindparam("b_next", type_=recipients.c.next_attempt_at.type),
            recipients.c.next_attempt_at,
        ),
        lease_owner=None,
        lease_token=None,
        lease_expires_at=None,
        lease_lost=False,
        possible_duplicate=recipients.c.possible_duplicate
        | bindparam("b_dup", type_=recipients.c.possible_duplicate.type),
        reason=bindparam("b_reason"),
        last_code=bindparam("b_code"),
        last_enhanced=bindparam("b_enhanced"),
        last_reply=bindparam("b_reply"),
        last_stage=bindparam("b_stage"),
        sent_at=bindparam("b_sent_at"),
        updated_at=bindparam("b_now"),
    )
)


async def _write_events(conn: Any, db: Database, live: Sequence[Settlement], now: float) -> None:
    by_message: dict[str, list[Settlement]] = defaultdict(list)
    for s in live:
        by_message[s.message_id].append(s)
    last = await last_seqs(conn, db.is_sqlite, list(by_message))
    rows: list[dict[str, Any]] = []
    for mid, group in by_message.items():
        seq = last.get(mid, 0)
        for s in group:
            seq += 1
            rows.append(
                {
                    "tenant_id": s.tenant_id,
                    "message_id": mid,
                    "recipient_id": s.recipient_id,
                    "seq": seq,
                    "type": s.event_type,
                    "created_at": now,
                    "data": event_data(s, seq),
                }
            )
    # The webhook outbox rows commit with the events or not at all.
    await record_events(conn, rows)


def event_data(s: Settlement, seq: int) -> dict[str, Any]:
    return {
        "message_id": s.message_id,
        "recipient_id": s.recipient_id,
        "recipient": s.email,
        "status": s.status,
        "reason": s.reason,
        "attempt": s.attempt_number,
        "smtp": {"code": s.code, "enhanced_code": s.enhanced, "reply": s.reply, "stage": s.stage},
        "possible_duplicate": s.possible_duplicate,
        "next_attempt_at": s.next_attempt_at,
        "tags": s.tags,
        "metadata": s.metadata,
        "seq": seq,
    }


async def next_due(db: Database) -> float | None:
    """When the earliest waiting recipient becomes due, for an idle worker's sleep."""
    async with db.read() as conn:
        return (await conn.execute(_NEXT_DUE)).scalar()


async def high_due(db: Database, now: float) -> bool:
    """Whether a high-priority recipient is due (one index seek, on a read connection)."""
    async with db.read() as conn:
        first = (await conn.execute(_FIRST_DUE_HIGH)).scalar()
    return first is not None and first <= now


def _first_due(priority: int) -> Any:
    """SQL: when the earliest waiting recipient of ``priority`` is due (one index seek)."""
    r = recipients
    return (
        select(r.c.next_attempt_at)
        .where(_claimable(), r.c.priority == literal(priority, literal_execute=True), unpaused())
        .order_by(r.c.next_attempt_at)
        .limit(1)
    )


def _next_due() -> Any:
    # The earliest row of each priority; a plain min() over every claimable row would read
    # the whole backlog.
    firsts = [_first_due(p).subquery() for p in _PRIORITIES]
    each = union_all(*(select(f.c.next_attempt_at) for f in firsts)).subquery()
    return select(func.min(each.c.next_attempt_at))


_PRIORITIES = (0, 1, 2)  # high, normal, low
_NEXT_DUE = _next_due()
_FIRST_DUE_HIGH = _first_due(0)

"""Bulk operator actions on recipients chosen by a filter: count, retry now, cancel, bounce.

Each action works in chunks: ids are chosen on a reader connection, then changed by id in a
short write transaction that re-checks the state (a recipient a worker claimed meanwhile is
left alone), so a bulk action of any size never holds the writer for long. Cancel and
bounce write events and webhook outbox rows the way a settle does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select, update

from service.admin.pauses import domain_matches, list_pauses, normalise
from service.db import queue
from service.db.engine import Database
from service.db.tables import messages, recipients
from service.domain.status import CLAIMABLE

Action = Literal["retry", "cancel", "bounce"]
WAITING = tuple(sorted(s.value for s in CLAIMABLE))
_TERMINAL_EVENT = {
    "cancel": ("cancelled", "message.cancelled"),
    "bounce": ("bounced", "message.bounced"),
}


class InvalidFilter(ValueError):
    """The filter selects nothing an action may change, or names an unknown state."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which recipients an action applies to; every field narrows the choice."""

    statuses: tuple[str, ...] = ()
    domain: str | None = None
    tenant: str | None = None
    older_than: float | None = None  # seconds since acceptance
    limit: int | None = None  # at most this many

    def checked(self, action: Action) -> Selection:
        statuses = self.statuses or (("deferred",) if action == "retry" else WAITING)
        bad = [s for s in statuses if s not in WAITING]
        if bad:
            raise InvalidFilter(
                f"{action} applies to waiting recipients ({', '.join(WAITING)}), "
                f"not {', '.join(bad)}"
            )
        domain = normalise("domain", self.domain) if self.domain else None
        if self.older_than is not None and self.older_than < 0:
            raise InvalidFilter("older_than must not be negative")
        if self.limit is not None and self.limit < 1:
            raise InvalidFilter("limit must be at least 1")
        return Selection(tuple(statuses), domain, self.tenant, self.older_than, self.limit)

    def where(self, now: float) -> list[Any]:
        r = recipients.c
        out: list[Any] = []
        if self.statuses:
            out.append(r.status.in_(list(self.statuses)))
        if self.domain:
            out.append(domain_matches(self.domain))
        if self.tenant:
            out.append(r.tenant_id == self.tenant)
        if self.older_than is not None:
            out.append(r.created_at <= now - self.older_than)
        return out


@dataclass(frozen=True, slots=True)
class Result:
    action: str
    matched: int
    changed: int
    dry_run: bool


async def count(db: Database, sel: Selection, *, now: float, action: Action) -> int:
    where = sel.where(now)
    if action == "retry":
        where.append(recipients.c.next_attempt_at > now)
    async with db.read() as conn:
        n = (await conn.execute(select(func.count()).where(*where))).scalar() or 0
    return min(int(n), sel.limit) if sel.limit else int(n)


async def apply(
    db: Database,
    action: Action,
    selection: Selection,
    *,
    now: float,
    dry_run: bool = False,
    chunk: int = 500,
    pause: float = 0.01,
) -> Result:
    """Run ``action`` on every recipient ``selection`` picks (or only count them)."""
    sel = selection.checked(action)
    matched = await count(db, sel, now=now, action=action)
    if dry_run or matched == 0:
        return Result(action, matched, 0, dry_run)
    changed = 0
    # Bounded: each round changes its rows out of the selection, or stops.
    for _ in range(matched // max(1, chunk) + 2):
        want = min(chunk, (sel.limit - changed) if sel.limit else chunk)
        if want <= 0:
            break
        where = sel.where(now)
        if action == "retry":
            where.append(recipients.c.next_attempt_at > now)
        async with db.read() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(recipients.c.id)
                        .where(*where)
                        .order_by(recipients.c.created_at, recipients.c.id)
                        .limit(want)
                    )
                )
                .scalars()
                .all()
            )
        if not ids:
            break
        n = await (
            _retry(db, ids, sel, now) if action == "retry" else _end(db, action, ids, sel, now)
        )
        changed += n
        if len(ids) < want:
            break
        await asyncio.sleep(pause)
    return Result(action, matched, changed, False)


async def _retry(db: Database, ids: list[str], sel: Selection, now: float) -> int:
    async with db.write() as conn:
        res = await conn.execute(
            update(recipients)
            .where(
                recipients.c.id.in_(ids),
                recipients.c.status.in_(list(sel.statuses)),
                recipients.c.next_attempt_at > now,
            )
            .values(next_attempt_at=now, updated_at=now)
        )
    return res.rowcount or 0


async def _end(db: Database, action: Action, ids: list[str], sel: Selection, now: float) -> int:
    status, event_type = _TERMINAL_EVENT[action]
    r = recipients.c
    async with db.write() as conn:
        rows = (
            await conn.execute(
                update(recipients)
                .where(r.id.in_(ids), r.status.in_(list(sel.statuses)))
                .values(
                    status=status,
                    reason=f"admin_{action}",
                    updated_at=now,
                )
                .returning(r.id, r.message_id, r.tenant_id, r.email, r.attempts)
            )
        ).all()
        if not rows:
            return 0
        meta = {
            m[0]: (m[1] or [], m[2] or {})
            for m in (
                await conn.execute(
                    select(messages.c.id, messages.c.tags, messages.c.metadata).where(
                        messages.c.id.in_(sorted({row[1] for row in rows}))
                    )
                )
            ).all()
        }
        reply = f"{action} by an operator"
        settled = [
            queue.Settlement(
                recipient_id=rid,
                token="",
                message_id=mid,
                tenant_id=tenant,
                email=email,
                status=status,
                attempt_number=attempts,
                next_attempt_at=None,
                reason=f"admin_{action}",
                event_type=event_type,
                outcome=action,
                stage="",
                code=None,
                enhanced=None,
                reply=reply,
                started_at=now,
                duration=0.0,
                possible_duplicate=False,
                tags=list(meta.get(mid, ([], {}))[0]),
                metadata=dict(meta.get(mid, ([], {}))[1]),
                attempted=False,
            )
            for rid, mid, tenant, email, attempts in rows
        ]
        await queue._write_events(conn, db, settled, now)
    return len(rows)


async def stats(db: Database, *, now: float, tenant: str | None = None) -> dict[str, Any]:
    """Recipients by state, the waiting queue by priority and by domain, and the pauses."""
    r = recipients.c
    scope = [r.tenant_id == tenant] if tenant else []
    domain = (
        func.lower(func.substr(r.email, func.instr(r.email, "@") + 1))
        if db.is_sqlite
        else (func.lower(func.split_part(r.email, "@", 2)))
    )
    async with db.read() as conn:
        by_status: dict[str, int] = dict(
            (
                await conn.execute(select(r.status, func.count()).where(*scope).group_by(r.status))
            ).all()
        )
        waiting = (
            await conn.execute(
                select(r.priority, func.count(), func.min(r.next_attempt_at))
                .where(r.status.in_(list(WAITING)), r.next_attempt_at <= now, *scope)
                .group_by(r.priority)
            )
        ).all()
        domains = (
            await conn.execute(
                select(domain.label("d"), func.count().label("n"))
                .where(r.status.in_(list(WAITING)), *scope)
                .group_by(domain)
                .order_by(func.count().desc())
                .limit(20)
            )
        ).all()
    return {
        "recipients": {k: int(v) for k, v in sorted(by_status.items())},
        "due": {
            str(p): {"count": int(n), "oldest_due_age_seconds": round(max(0.0, now - float(o)), 3)}
            for p, n, o in waiting
        },
        "waiting_by_domain": [{"domain": d, "count": int(n)} for d, n in domains],
        "pauses": [
            {"kind": p.kind, "value": p.value, "reason": p.reason, "created_at": p.created_at}
            for p in await list_pauses(db)
        ],
    }

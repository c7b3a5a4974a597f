"""The suppression list: addresses a tenant never sends to again.

Single sends look suppressed addresses up inside the group commit (one SELECT per shared
transaction, see ``service.db.accepts``), other accepts with one SELECT per request; settles
add hard-bounced addresses inside their own transaction, so a bounce and its suppression
commit together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from service.db.engine import Database
from service.db.plain_statement import PlainStatement
from service.db.tables import suppressions

REASONS = ("bounce", "complaint", "manual")

# Enhanced codes that say the mailbox itself is gone or refused for good (RFC 3463): bad
# mailbox or domain, moved, null MX, disabled. Full mailboxes and policy blocks (5.2.2,
# 5.7.x) are not here: they may clear up, and suppressing on them loses good addresses.
HARD_BOUNCE_CODES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1"})


class SettledRecipient(Protocol):
    tenant_id: str
    email: str
    message_id: str
    status: str
    enhanced: str | None
    reply: str


def is_hard_bounce(status: str, enhanced: str | None) -> bool:
    return status == "bounced" and enhanced in HARD_BOUNCE_CODES


def _insert_ignore(is_sqlite: bool, rows: list[dict[str, Any]]) -> Any:
    dialect_insert = sqlite.insert if is_sqlite else postgresql.insert
    return (
        dialect_insert(suppressions)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["tenant_id", "email"])
    )


async def suppress_hard_bounces(
    conn: Any, is_sqlite: bool, settled: Sequence[SettledRecipient], now: float
) -> int:
    """Inside a settle transaction: suppress every hard-bounced address for its tenant."""
    rows = [
        {
            "tenant_id": s.tenant_id,
            "email": s.email.lower(),
            "reason": "bounce",
            "detail": f"{s.enhanced} {s.reply}"[:1000],
            "source_message_id": s.message_id,
            "created_at": now,
        }
        for s in settled
        if is_hard_bounce(s.status, s.enhanced)
    ]
    if not rows:
        return 0
    await conn.execute(_insert_ignore(is_sqlite, rows))
    return len(rows)


async def suppressed_among(db: Database, tenant_id: str, emails: Iterable[str]) -> set[str]:
    """The lower-cased addresses of ``emails`` that the tenant suppressed."""
    wanted = sorted({e.lower() for e in emails})
    if not wanted:
        return set()
    async with db.read() as conn:
        rows = await conn.execute(
            select(suppressions.c.email).where(
                suppressions.c.tenant_id == tenant_id, suppressions.c.email.in_(wanted)
            )
        )
        return {r[0] for r in rows.all()}


async def suppressed_in(
    conn: Any, wanted: Iterable[tuple[str, str]], *, chunk: int = 500
) -> set[tuple[str, str]]:
    """On ``conn``: the (tenant_id, lower-cased email) pairs of ``wanted`` on the list.

    One SELECT per ``chunk`` addresses (bounded by the drivers' parameter limits); the
    unique index on (tenant_id, email) serves both IN lists.
    """
    pairs = {(t, e.lower()) for t, e in wanted}
    tenants = sorted({t for t, _ in pairs})
    emails = sorted({e for _, e in pairs})
    found: set[tuple[str, str]] = set()
    for start in range(0, len(emails), chunk):
        rows = await _SUPPRESSED_IN.rows(
            conn, {"tenants": tenants, "emails": emails[start : start + chunk]}
        )
        found.update((t, e) for t, e in rows if (t, e) in pairs)
    return found


# Plain: it runs in every accept transaction that applies suppressions.
_SUPPRESSED_IN = PlainStatement(
    select(suppressions.c.tenant_id, suppressions.c.email).where(
        suppressions.c.tenant_id.in_(bindparam("tenants", expanding=True)),
        suppressions.c.email.in_(bindparam("emails", expanding=True)),
    )
)


async def add(
    db: Database,
    *,
    tenant_id: str,
    email: str,
    reason: str,
    detail: str | None,
    now: float,
) -> dict[str, Any]:
    """Suppress ``email``; an address already on the list keeps its first entry."""
    row = {
        "tenant_id": tenant_id,
        "email": email.lower(),
        "reason": reason,
        "detail": detail,
        "source_message_id": None,
        "created_at": now,
    }
    async with db.write() as conn:
        await conn.execute(_insert_ignore(db.is_sqlite, [row]))
        found = await conn.execute(
            select(suppressions).where(
                suppressions.c.tenant_id == tenant_id, suppressions.c.email == row["email"]
            )
        )
        return dict(found.one()._mapping)


async def remove(db: Database, *, tenant_id: str, email: str) -> bool:
    async with db.write() as conn:
        res = await conn.execute(
            delete(suppressions).where(
                suppressions.c.tenant_id == tenant_id, suppressions.c.email == email.lower()
            )
        )
    return bool(res.rowcount)


async def list_page(
    db: Database,
    *,
    tenant_id: str,
    limit: int,
    after: int | None = None,
    reason: str | None = None,
    email: str | None = None,
) -> list[dict[str, Any]]:
    """Oldest first from cursor ``after`` (an id); ``email`` filters by a substring."""
    q = select(suppressions).where(suppressions.c.tenant_id == tenant_id)
    if after is not None:
        q = q.where(suppressions.c.id > after)
    if reason:
        q = q.where(suppressions.c.reason == reason)
    if email:
        q = q.where(suppressions.c.email.contains(email.lower(), autoescape=True))
    q = q.order_by(suppressions.c.id).limit(limit)
    async with db.read() as conn:
        return [dict(r._mapping) for r in (await conn.execute(q)).all()]

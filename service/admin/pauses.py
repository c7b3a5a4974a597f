"""Delivery pauses per tenant or destination domain: rows the claim query steers around.

A paused recipient keeps its state and due time; it is simply not claimed (nor counted as
due by an idle worker) until the pause is lifted, and then goes out in its usual order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, exists, func, literal, select
from sqlalchemy.exc import IntegrityError

from service.db.engine import Database
from service.db.tables import delivery_pauses, recipients

PauseKind = Literal["tenant", "domain"]
KINDS: tuple[PauseKind, ...] = ("tenant", "domain")
# LIKE's wildcards cannot appear, so a domain pattern matches exactly that domain.
_DOMAIN = re.compile(r"^[^\s@%_\\]{1,253}$")
_TENANT = re.compile(r"^[^\s]{1,64}$")


@dataclass(frozen=True, slots=True)
class Pause:
    kind: str
    value: str
    reason: str
    created_at: float


def normalise(kind: str, value: str) -> str:
    """The stored form of a pause target; ValueError if it cannot be one."""
    value = value.strip()
    if kind == "domain":
        value = value.lower().lstrip("@")
        if not _DOMAIN.match(value):
            raise ValueError(f"not a domain name: {value!r}")
        return value
    if kind == "tenant":
        if not _TENANT.match(value):
            raise ValueError(f"not a tenant id: {value!r}")
        return value
    raise ValueError(f"kind must be tenant or domain, not {kind!r}")


def domain_matches(domain: Any) -> Any:
    """SQL: the recipient's address is at ``domain`` (a column or a bound value)."""
    return func.lower(recipients.c.email).like(literal("%@") + domain)


def unpaused() -> Any:
    """SQL condition on ``recipients``: neither its tenant nor its domain is paused."""
    dp = delivery_pauses
    tenant_paused = exists().where(dp.c.kind == "tenant", dp.c.value == recipients.c.tenant_id)
    domain_paused = exists().where(dp.c.kind == "domain", domain_matches(dp.c.value))
    return ~tenant_paused & ~domain_paused


async def pause(db: Database, kind: str, value: str, *, reason: str, now: float) -> bool:
    """Pause delivery to ``value``; False if it was already paused."""
    value = normalise(kind, value)
    try:
        async with db.write() as conn:
            await conn.execute(
                delivery_pauses.insert().values(
                    kind=kind, value=value, reason=reason[:500], created_at=now
                )
            )
    except IntegrityError:
        return False
    return True


async def resume(db: Database, kind: str, value: str) -> bool:
    """Lift a pause; False if there was none."""
    value = normalise(kind, value)
    async with db.write() as conn:
        res = await conn.execute(
            delete(delivery_pauses).where(
                delivery_pauses.c.kind == kind, delivery_pauses.c.value == value
            )
        )
    return bool(res.rowcount)


async def list_pauses(db: Database) -> list[Pause]:
    dp = delivery_pauses
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(dp.c.kind, dp.c.value, dp.c.reason, dp.c.created_at).order_by(
                    dp.c.kind, dp.c.value
                )
            )
        ).all()
    return [Pause(*r) for r in rows]

"""Stored templates of each tenant: create, read, update, delete, list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from service.db.engine import Database
from service.db.tables import templates
from service.domain.ids import is_id, new_id


class NameTaken(Exception):
    """Another template of the tenant already has this name."""


def _ref(ref: str) -> Any:
    """Templates are named by id (tpl_…) or by name."""
    return templates.c.id == ref if is_id(ref, "tpl") else templates.c.name == ref


async def create(
    db: Database, *, tenant_id: str, name: str, parts: dict[str, str | None], now: float
) -> dict[str, Any]:
    row = {
        "id": new_id("tpl", now),
        "tenant_id": tenant_id,
        "name": name,
        **parts,
        "created_at": now,
        "updated_at": now,
    }
    try:
        async with db.write() as conn:
            await conn.execute(templates.insert(), row)
    except IntegrityError as exc:
        raise NameTaken(name) from exc
    return row


async def get(db: Database, *, tenant_id: str, ref: str) -> dict[str, Any] | None:
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(templates).where(templates.c.tenant_id == tenant_id, _ref(ref))
            )
        ).first()
    return None if row is None else dict(row._mapping)


async def get_many(
    db: Database, *, tenant_id: str, refs: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Templates by every id or name in ``refs`` (one query), keyed by the ref used."""
    wanted = sorted(set(refs))
    if not wanted:
        return {}
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(templates).where(
                    templates.c.tenant_id == tenant_id,
                    or_(templates.c.id.in_(wanted), templates.c.name.in_(wanted)),
                )
            )
        ).all()
    found: dict[str, dict[str, Any]] = {}
    for r in rows:
        m = dict(r._mapping)
        for ref in (m["id"], m["name"]):
            if ref in wanted:
                found[ref] = m
    return found


async def replace(
    db: Database,
    *,
    tenant_id: str,
    ref: str,
    name: str,
    parts: dict[str, str | None],
    now: float,
) -> dict[str, Any] | None:
    try:
        async with db.write() as conn:
            res = await conn.execute(
                update(templates)
                .where(templates.c.tenant_id == tenant_id, _ref(ref))
                .values(name=name, updated_at=now, **parts)
                .returning(*templates.c)
            )
            row = res.first()
    except IntegrityError as exc:
        raise NameTaken(name) from exc
    return None if row is None else dict(row._mapping)


async def remove(db: Database, *, tenant_id: str, ref: str) -> bool:
    async with db.write() as conn:
        res = await conn.execute(
            delete(templates).where(templates.c.tenant_id == tenant_id, _ref(ref))
        )
    return bool(res.rowcount)


async def list_page(
    db: Database, *, tenant_id: str, limit: int, after: str | None
) -> list[dict[str, Any]]:
    q = select(templates).where(templates.c.tenant_id == tenant_id)
    if after:
        q = q.where(templates.c.id > after)
    q = q.order_by(templates.c.id).limit(limit)
    async with db.read() as conn:
        return [dict(r._mapping) for r in (await conn.execute(q)).all()]

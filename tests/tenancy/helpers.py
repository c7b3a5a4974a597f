"""Shared pieces of the tenancy tests: request bodies, row counts, extra keys."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from service.db.engine import Database
from service.db.keys import create_key

GOOD: dict[str, Any] = {
    "from": "a@example.com",
    "to": ["b@example.com"],
    "subject": "s",
    "text": "t",
}


async def count(url: str, table: Any) -> int:
    db = Database(url)
    try:
        async with db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
    finally:
        await db.dispose()


async def new_key(
    url: str,
    *,
    tenant: str,
    scopes: tuple[str, ...] = ("messages:send", "messages:read", "webhooks:manage", "keys:manage"),
    expires_in: float | None = None,
) -> tuple[str, str]:
    """(plain key, key id)."""
    db = Database(url)
    try:
        now = time.time()
        key, record = await create_key(
            db,
            name=f"{tenant}-key",
            tenant_id=tenant,
            scopes=scopes,
            now=now,
            expires_at=now + expires_in if expires_in is not None else None,
        )
        return key, record.id
    finally:
        await db.dispose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}

"""Fencing shared by every leased queue (recipients, webhook deliveries)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, select


async def still_held(
    conn: Any, table: Table, ids: Sequence[str], *, status: str, is_sqlite: bool
) -> set[tuple[str, str]]:
    """The (id, lease token) pairs among ``ids`` that are still leased.

    A result is written only if its row is still held under the token it was obtained with,
    so a worker whose lease expired cannot overwrite the new owner's outcome. On PostgreSQL
    the rows are locked until the settle commits; SQLite's writer is already exclusive.
    """
    query = select(table.c.id, table.c.lease_token).where(
        table.c.id.in_(list(ids)), table.c.status == status
    )
    if not is_sqlite:
        query = query.with_for_update()
    return {(r[0], r[1]) for r in (await conn.execute(query)).all()}

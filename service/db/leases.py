"""Fencing shared by every leased queue (recipients, webhook deliveries)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, bindparam, select

from service.db.plain_statement import PlainStatement


async def still_held(
    conn: Any, table: Table, ids: Sequence[str], *, status: str, is_sqlite: bool
) -> set[tuple[str, str]]:
    """The (id, lease token) pairs among ``ids`` that are still leased.

    A result is written only if its row is still held under the token it was obtained with,
    so a worker whose lease expired cannot overwrite the new owner's outcome. On PostgreSQL
    the rows are locked until the settle commits; SQLite's writer is already exclusive.
    """
    if not ids:
        return set()
    rows = await _held(table, is_sqlite).rows(conn, {"b_ids": list(ids), "b_status": status})
    return {(r[0], r[1]) for r in rows}


@functools.lru_cache(maxsize=16)
def _held(table: Table, is_sqlite: bool) -> PlainStatement:
    query = select(table.c.id, table.c.lease_token).where(
        table.c.id.in_(bindparam("b_ids", expanding=True)),
        table.c.status == bindparam("b_status"),
    )
    if not is_sqlite:
        query = query.with_for_update()
    return PlainStatement(query)

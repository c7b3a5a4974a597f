"""Ids for new rows of a table with an auto-incremented integer key, known before the INSERT.

Whoever needs the ids of rows it inserts (webhook deliveries name their event) would
otherwise need INSERT ... RETURNING in parameter order, which SQLAlchemy runs one row per
statement on SQLite. With the ids reserved first, the rows go in with one plain
executemany (``service.db.plain_insert``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table


async def reserve_ids(conn: Any, table: Table, n: int) -> list[int] | None:
    """``n`` unused ids of ``table``'s ``id`` column, ascending; None if this database
    has no way here (the caller then lets the INSERT assign them).

    SQLite: the ids after the largest one, as SQLite itself would assign them; only
    correct inside a writing transaction (``Database.write``: BEGIN IMMEDIATE), whose
    lock keeps every other writer out until the commit. PostgreSQL: values drawn from the
    column's sequence, the same values the INSERT's default would draw, so concurrent
    writers never collide.
    """
    if n <= 0:
        return []
    dialect = conn.dialect
    quote = dialect.identifier_preparer
    if dialect.name == "sqlite":
        if table.dialect_options["sqlite"].get("autoincrement"):
            return None  # AUTOINCREMENT never reuses a deleted row's id: not max + 1
        sql = f"SELECT max({quote.quote('id')}) FROM {quote.format_table(table)}"
        top = (await conn.exec_driver_sql(sql)).scalar()
        return list(range((top or 0) + 1, (top or 0) + 1 + n))
    if dialect.name == "postgresql" and dialect.paramstyle == "numeric_dollar":
        sql = (
            "SELECT nextval(q.seq) FROM (SELECT pg_get_serial_sequence($1, 'id')::regclass"
            " AS seq) AS q CROSS JOIN generate_series(1, $2::integer)"
        )
        found = await conn.exec_driver_sql(sql, (quote.format_table(table), n))
        ids = found.scalars().all()
        return None if None in ids else sorted(ids)  # None: the column has no sequence
    return None

"""Plain SQL with plain parameters, on the driver itself where SQLAlchemy adds nothing.

``exec_driver_sql`` on an ``AsyncConnection`` hops into a greenlet, builds an execution
context, a cursor adapter and a result, about 47 µs here around a SQLite call that takes
2 µs. On the inline SQLite dialect (``service.db.sqlite_inline``) the statements of an
open transaction run on the same ``sqlite3`` connection whichever way they go, so
``run`` calls it directly; the transaction, its BEGIN and COMMIT stay SQLAlchemy's.

What SQLAlchemy would add is kept: a driver error goes through the connection's own
error handling (wrapped as ``IntegrityError``, ``OperationalError`` …, ``handle_error``
listeners told, a dead connection invalidated). Where a listener watches statements
(``before_cursor_execute`` / ``after_cursor_execute``) or the engine echoes them, and on
every other dialect, the statement takes ``exec_driver_sql``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util.concurrency import greenlet_spawn

from service.db.sqlite_inline import driver_connection

Params = Sequence[Any]

# The private parts of SQLAlchemy's Connection this relies on (stable through 2.x); without
# them every statement takes ``exec_driver_sql``, as on other dialects.
_HANDLES_ERRORS = hasattr(Connection, "_handle_dbapi_exception")


async def run(
    conn: AsyncConnection, sql: str, params: Params | Sequence[Params] = (), *, many: bool = False
) -> list[tuple[Any, ...]] | None:
    """Run ``sql`` once (``many``: once per parameter tuple); its rows, or None when the
    statement returns none."""
    raw = _inline(conn)
    if raw is None:
        result = await conn.exec_driver_sql(sql, list(params) if many else params)
        return [tuple(r) for r in result.all()] if result.returns_rows else None
    try:
        cursor = raw.executemany(sql, params) if many else raw.execute(sql, params)
        try:
            return cursor.fetchall() if cursor.description is not None else None
        finally:
            cursor.close()
    except sqlite3.Error as exc:
        await _raise_wrapped(conn, exc, sql, params)
        raise  # not reached


async def run_many_counted(conn: AsyncConnection, sql: str, params: Sequence[Params]) -> int:
    """``run(..., many=True)`` for a statement without rows; the rows it changed in all."""
    raw = _inline(conn)
    if raw is None:
        return (await conn.exec_driver_sql(sql, list(params))).rowcount
    try:
        cursor = raw.executemany(sql, params)
        try:
            return cursor.rowcount
        finally:
            cursor.close()
    except sqlite3.Error as exc:
        await _raise_wrapped(conn, exc, sql, params)
        raise  # not reached


async def _raise_wrapped(conn: AsyncConnection, exc: sqlite3.Error, sql: str, params: Any) -> None:
    """Raise ``exc`` as SQLAlchemy would have (wrapped, listeners told, a dead connection
    invalidated); in a greenlet, since invalidating closes it through the async adapter."""
    handle = conn.sync_connection._handle_dbapi_exception  # type: ignore[union-attr]
    await greenlet_spawn(handle, exc, sql, params, None, None)


def _inline(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under ``conn``, when a statement may go straight to it."""
    if not _HANDLES_ERRORS or conn.dialect.driver != "kirim_inline" or not conn.in_transaction():
        # Outside a transaction SQLAlchemy must begin one first (a read's snapshot).
        return None
    sync = conn.sync_connection
    if sync is None or sync.invalidated or getattr(sync, "_echo", True):
        return None
    dispatch = sync.dispatch
    if dispatch.before_cursor_execute or dispatch.after_cursor_execute:
        return None
    fairy = getattr(sync, "_dbapi_connection", None)
    return None if fairy is None else driver_connection(fairy.dbapi_connection)

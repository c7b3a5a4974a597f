"""Statements on SQLite go straight to the driver inside a transaction, and nothing that
SQLAlchemy would have done for them is lost: error wrapping, error listeners, a read's
snapshot, statement listeners."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db import driver_sql
from service.db.engine import Database

pytestmark = pytest.mark.asyncio

_INSERT = "INSERT INTO suppressions (tenant_id, email, reason, created_at) VALUES (?, ?, ?, ?)"
_COUNT = "SELECT count(*) FROM suppressions"


def _row(email: str) -> tuple[str, str, str, float]:
    return ("t", email, "manual", 1.0)


def _refuse_core(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(*_: Any, **__: Any) -> Any:
        raise AssertionError("went through exec_driver_sql")

    monkeypatch.setattr(AsyncConnection, "exec_driver_sql", refused)


async def test_a_transaction_runs_its_statements_on_the_driver(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(sqlite_url)
    try:
        async with db.write() as conn:
            _refuse_core(monkeypatch)
            await driver_sql.run(conn, _INSERT, [_row("a@x"), _row("b@x")], many=True)
            assert await driver_sql.run(conn, _COUNT) == [(2,)]
            assert await driver_sql.run(conn, _INSERT, _row("c@x")) is None
        monkeypatch.undo()
        async with db.read() as conn:
            assert await driver_sql.run(conn, _COUNT) == [(3,)]  # committed
    finally:
        await db.dispose()


async def test_a_driver_error_arrives_wrapped_and_told_to_listeners(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    told: list[BaseException] = []
    event.listen(
        db.writer.sync_engine, "handle_error", lambda ctx: told.append(ctx.sqlalchemy_exception)
    )
    try:
        with pytest.raises(IntegrityError) as caught:
            async with db.write() as conn:
                await driver_sql.run(conn, _INSERT, _row("a@x"))
                await driver_sql.run(conn, _INSERT, [_row("b@x"), _row("a@x")], many=True)
        assert isinstance(caught.value.orig, sqlite3.IntegrityError)
        assert told == [caught.value]
        # The transaction was rolled back whole, and the writer works on.
        async with db.write() as conn:
            assert await driver_sql.run(conn, _COUNT) == [(0,)]
            await driver_sql.run(conn, _INSERT, _row("a@x"))
        async with db.read() as conn:
            assert await driver_sql.run(conn, _COUNT) == [(1,)]
    finally:
        await db.dispose()


async def test_a_read_keeps_its_snapshot(sqlite_url: str) -> None:
    """The first statement of a read begins its transaction through SQLAlchemy, so what
    another connection commits meanwhile stays out of it."""
    db = Database(sqlite_url)
    try:
        async with db.read() as conn:
            assert await driver_sql.run(conn, _COUNT) == [(0,)]
            async with db.write() as writer:
                await driver_sql.run(writer, _INSERT, _row("a@x"))
            assert await driver_sql.run(conn, _COUNT) == [(0,)]
        async with db.read() as conn:
            assert await driver_sql.run(conn, _COUNT) == [(1,)]
    finally:
        await db.dispose()


async def test_statement_listeners_see_every_statement(database_url: str) -> None:
    db = Database(database_url)
    seen: list[str] = []

    def on_execute(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(db.writer.sync_engine, "before_cursor_execute", on_execute)
    insert = _INSERT if db.is_sqlite else _INSERT.replace("?", "$%d") % (1, 2, 3, 4)
    try:
        async with db.write() as conn:
            await driver_sql.run(conn, insert, [_row("a@x"), _row("b@x")], many=True)
            assert await driver_sql.run(conn, _COUNT) == [(2,)]
        assert seen == [insert, _COUNT]
    finally:
        await db.dispose()


async def test_without_the_private_parts_it_uses_sqlalchemy(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a SQLAlchemy release drop what the driver path relies on, every statement
    takes exec_driver_sql instead of failing."""
    db = Database(sqlite_url)
    through: list[str] = []
    original = AsyncConnection.exec_driver_sql

    async def spied(self: AsyncConnection, sql: str, *args: Any, **kw: Any) -> Any:
        through.append(sql)
        return await original(self, sql, *args, **kw)

    monkeypatch.setattr(AsyncConnection, "exec_driver_sql", spied)
    monkeypatch.setattr(driver_sql, "_HANDLES_ERRORS", False)
    try:
        async with db.write() as conn:
            await driver_sql.run(conn, _INSERT, [_row("a@x")], many=True)
            assert await driver_sql.run(conn, _COUNT) == [(1,)]
        assert through == [_INSERT, _COUNT]
    finally:
        await db.dispose()

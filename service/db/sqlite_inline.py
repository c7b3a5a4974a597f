"""A SQLAlchemy async dialect that runs SQLite calls inline, without a thread per connection.

aiosqlite hands every call to a thread and back; on this class of machine one hand-off
costs about 0.5 ms, and a simple indexed read makes five of them. SQLite calls that do not
wait on a lock finish in microseconds, so Kirim runs them directly on the event loop: WAL
readers never wait for the writer, and the one writer connection's statements are short. A
commit, which syncs to disk, runs inline too (see ``commit``); waiting for another process's
write lock is bounded by a short busy timeout and retried asynchronously
(``Database._begin_sqlite``).

Registered as ``sqlite+kirim_inline``; used by ``service.db.engine.Database`` for its reader
pool and its writer connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util.concurrency import await_


class _Cursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._c = cursor

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._c.close()

    @property
    def description(self) -> Any:
        return self._c.description

    @property
    def rowcount(self) -> int:
        return self._c.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._c.lastrowid

    @property
    def arraysize(self) -> int:
        return self._c.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._c.arraysize = value

    async def execute(self, sql: str, params: Any = ()) -> _Cursor:
        self._c.execute(sql, params)
        return self

    async def executemany(self, sql: str, params: Sequence[Any]) -> _Cursor:
        self._c.executemany(sql, params)
        return self

    async def fetchone(self) -> Any:
        return self._c.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._c.fetchmany(size or self._c.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._c.fetchall()

    async def close(self) -> None:
        self._c.close()


class _Connection:
    """Just enough of aiosqlite.Connection's surface, running inline."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._connection = conn  # truthy while open, as the adapter checks

    def __await__(self) -> Any:
        async def ready() -> _Connection:
            return self

        return ready().__await__()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> _Cursor:
        return _Cursor(self._conn.cursor())

    async def execute(self, sql: str, params: Any = ()) -> _Cursor:
        return _Cursor(self._conn.execute(sql, params))

    async def commit(self) -> None:
        # Inline too, though it syncs to disk (a fraction of a millisecond with the WAL
        # here). In a thread it took about 5 ms under load while holding the write lock:
        # the thread, done, waited for the GIL behind the busy loop (the 5 ms switch
        # interval).
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)

    async def close(self) -> None:
        self._conn.close()
        self._connection = None  # type: ignore[assignment]

    def stop(self) -> None:
        self._conn.close()


class _InlineModule(ModuleType):
    """The module-like object the aiosqlite adapter expects."""

    Connection = _Connection

    def __init__(self) -> None:
        super().__init__("kirim_sqlite_inline")
        for name in (
            "DatabaseError",
            "Error",
            "IntegrityError",
            "NotSupportedError",
            "OperationalError",
            "ProgrammingError",
            "sqlite_version",
            "sqlite_version_info",
        ):
            setattr(self, name, getattr(sqlite3, name))

    def connect(self, database: str, **kw: Any) -> _Connection:
        kw.setdefault("check_same_thread", False)
        return _Connection(sqlite3.connect(database, **kw))


class _InlineAdaptConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    def begin_inline(self, sql: str) -> None:
        self._connection._conn.execute(sql)

    @property
    def isolation_level(self) -> str | None:
        return self._connection.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._connection._conn.isolation_level = value


def driver_connection(dbapi_connection: Any) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under a pooled connection of this dialect, else None."""
    if isinstance(dbapi_connection, _InlineAdaptConnection):
        conn: sqlite3.Connection = dbapi_connection._connection._conn
        return conn
    return None


class _InlineDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> _InlineAdaptConnection:
        kw.pop("async_creator_fn", None)
        return _InlineAdaptConnection(self, await_(self.aiosqlite.connect(*arg, **kw)))


class InlineSQLiteDialect(SQLiteDialect_aiosqlite):
    """``begin_sql`` (a ``create_engine`` argument) starts every transaction: the writer's
    engine takes ``BEGIN IMMEDIATE`` so that a transaction holds the write lock from its
    first statement. It runs straight on the driver, as SQLAlchemy's own begin would: a
    statement through the engine builds an execution context and a result for nothing,
    twice a transaction's own work for a short one. Driver errors ("database is locked")
    arrive wrapped as SQLAlchemy's, as from any statement."""

    driver = "kirim_inline"
    supports_statement_cache = True

    def __init__(self, begin_sql: str = "BEGIN", **kw: Any) -> None:
        super().__init__(**kw)
        self.begin_sql = begin_sql

    def do_begin(self, dbapi_connection: Any) -> None:
        dbapi_connection.begin_inline(self.begin_sql)

    @classmethod
    def import_dbapi(cls) -> Any:
        return _InlineDBAPI(_InlineModule(), sqlite3)


registry.register("sqlite.kirim_inline", "service.db.sqlite_inline", "InlineSQLiteDialect")

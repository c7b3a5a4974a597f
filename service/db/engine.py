"""Database engines: one writer and many readers on SQLite, one pool on PostgreSQL.

SQLite allows one writer at a time, and a deferred transaction that reads before it writes
can fail with SQLITE_BUSY whatever the busy timeout; so every writing transaction begins
IMMEDIATE on a single dedicated connection, and reads use a separate pool (WAL lets them run
beside the writer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


class DatabaseUnavailable(Exception):
    """The database is busy, locked or unreachable; the caller may retry later."""


def async_url(url: str) -> str:
    """Map a user-facing URL to the async driver SQLAlchemy needs."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:") :]
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


@dataclass
class DatabaseOptions:
    pool_size: int = 10
    statement_timeout_ms: int = 30_000
    busy_timeout_ms: int = 5_000


class Database:
    """The engines of one process, created by the entry point and passed down."""

    def __init__(self, url: str, options: DatabaseOptions | None = None) -> None:
        self.url = url
        self.options = options or DatabaseOptions()
        self.is_sqlite = url.startswith("sqlite")
        driver_url = async_url(url)
        if self.is_sqlite:
            self.writer = create_async_engine(
                driver_url, pool_size=1, max_overflow=0, pool_timeout=60
            )
            self.reader = create_async_engine(driver_url, pool_size=4, max_overflow=4)
            _sqlite_setup(self.writer, immediate=True, busy_ms=self.options.busy_timeout_ms)
            _sqlite_setup(self.reader, immediate=False, busy_ms=self.options.busy_timeout_ms)
        else:
            timeout = str(self.options.statement_timeout_ms)
            self.writer = create_async_engine(
                driver_url,
                pool_size=self.options.pool_size,
                max_overflow=self.options.pool_size,
                pool_pre_ping=True,
                pool_recycle=1800,
                connect_args={"server_settings": {"statement_timeout": timeout}},
            )
            self.reader = self.writer

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A writing transaction (BEGIN IMMEDIATE on SQLite), committed on exit."""
        try:
            async with self.writer.begin() as conn:
                yield conn
        except (OperationalError, DBAPIError, OSError, ConnectionError) as exc:
            if _is_unavailable(exc):
                raise DatabaseUnavailable(str(exc).splitlines()[0]) from exc
            raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.reader.connect() as conn:
                yield conn
        except (OperationalError, DBAPIError, OSError, ConnectionError) as exc:
            if _is_unavailable(exc):
                raise DatabaseUnavailable(str(exc).splitlines()[0]) from exc
            raise

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OSError | ConnectionError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    text = str(exc).lower()
    return any(
        s in text
        for s in (
            "database is locked",
            "database is busy",
            "disk i/o error",
            "database or disk is full",
            "connection refused",
            "connection was closed",
            "connection is closed",
            "cannot connect",
            "the database system is",  # starting up / shutting down
            "terminating connection",
            "connectionreset",
            "connection reset",
            "server closed the connection",
            "timeout",
        )
    )


def _sqlite_setup(engine: AsyncEngine, *, immediate: bool, busy_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook, not the driver, decide when transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

"""Database engines: one writer and many readers on SQLite, one pool on PostgreSQL.

SQLite allows one writer at a time, and a deferred transaction that reads before it writes
can fail with SQLITE_BUSY whatever the busy timeout; so every writing transaction begins
IMMEDIATE on a single dedicated connection, and reads use a separate pool (WAL lets them run
beside the writer).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service.db import json_codec
from service.db.wake_socket import directory_for_url
from service.db.writer_turns import WriterTurns

if TYPE_CHECKING:
    from service.settings import Settings

_JSON: dict[str, Any] = {
    "json_serializer": json_codec.dumps,
    "json_deserializer": json_codec.loads,
}


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
    max_overflow: int = 10
    statement_timeout_ms: int = 30_000
    connect_timeout_ms: int = 10_000
    busy_timeout_ms: int = 5_000


def options_from(settings: Settings) -> DatabaseOptions:
    """The engine options a process's settings ask for."""
    return DatabaseOptions(
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        statement_timeout_ms=settings.database_statement_timeout_ms,
        connect_timeout_ms=settings.database_connect_timeout_ms,
        busy_timeout_ms=settings.database_busy_timeout_ms,
    )


class Database:
    """The engines of one process, created by the entry point and passed down."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(settings.database_url.get_secret_value(), options_from(settings))

    def __init__(self, url: str, options: DatabaseOptions | None = None) -> None:
        self.url = url
        self.options = options or DatabaseOptions()
        self.is_sqlite = url.startswith("sqlite")
        self._turns: WriterTurns | None = None
        driver_url = async_url(url)
        if self.is_sqlite:
            # SQLite calls run inline on the event loop (see service.db.sqlite_inline): a
            # thread hand-off per statement costs more than the statement. One connection
            # writes (SQLite has one writer anyway); waiting for another process's lock
            # happens in short slices between which the loop runs (see ``write``).
            import service.db.sqlite_inline  # noqa: F401  (registers the dialect)

            _ensure_wal(url, self.options.busy_timeout_ms)
            bind_plain_values_directly()
            inline_url = driver_url.replace("sqlite+aiosqlite:", "sqlite+kirim_inline:", 1)
            self.writer = create_async_engine(
                inline_url, pool_size=1, max_overflow=0, begin_sql="BEGIN IMMEDIATE", **_JSON
            )
            # The writer connection stays checked out between transactions: a pool
            # checkout and check-in per transaction cost as much as a short one's SQL.
            # Tasks take turns at it through this lock, as they queued at the pool.
            self._writer_free = asyncio.Lock()
            self._held: AsyncConnection | None = None
            self.reader = create_async_engine(inline_url, pool_size=8, max_overflow=8, **_JSON)
            _sqlite_setup(self.writer, busy_ms=_SLICE_BUSY_MS, then_busy_ms=0)
            _sqlite_setup(self.reader, busy_ms=_SLICE_BUSY_MS, set_wal=False)
            self._turns = WriterTurns.for_directory(directory_for_url(url))
        else:
            timeout = str(self.options.statement_timeout_ms)
            connect_s = self.options.connect_timeout_ms / 1000
            self.writer = create_async_engine(
                driver_url,
                pool_size=self.options.pool_size,
                max_overflow=self.options.max_overflow,
                pool_timeout=connect_s,
                pool_recycle=1800,
                connect_args={
                    "timeout": connect_s,
                    "server_settings": {"statement_timeout": timeout},
                },
                **_JSON,
            )
            self.reader = self.writer
            _ping_when_idle(self.writer)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A writing transaction (BEGIN IMMEDIATE on SQLite), committed on exit."""
        with _unavailable_mapped():
            if self.is_sqlite:
                conn = await self._begin_sqlite()
                done = False
                try:
                    yield conn
                    await conn.commit()
                    done = True
                except BaseException:
                    await conn.rollback()
                    raise
                finally:
                    try:
                        if not done:
                            # Whatever failed may have left the connection unusable: the
                            # next transaction starts on a fresh one.
                            await self._release_held()
                    finally:
                        self._writer_free.release()
            else:
                async with self.writer.begin() as conn:
                    yield conn

    async def _begin_sqlite(self) -> AsyncConnection:
        """BEGIN IMMEDIATE, waiting for another process's write lock in short slices.

        A try never blocks the loop (the writer's busy timeout is 0): another process's
        write transactions are short, so retries start at half a millisecond and back off
        to 4 ms. After ``busy_timeout_ms`` in all, the database counts as unavailable (503).
        """
        free = self._writer_free
        if free.locked():
            try:
                async with asyncio.timeout(_WRITER_WAIT):
                    await free.acquire()
            except TimeoutError:
                raise DatabaseUnavailable("no turn at the writer connection") from None
        else:
            await free.acquire()  # at once
        try:
            return await self._begin_held()
        except BaseException:
            try:
                await self._release_held()
            finally:
                self._writer_free.release()
            raise

    async def _begin_held(self) -> AsyncConnection:
        deadline = time.monotonic() + self.options.busy_timeout_ms / 1000
        pause = 0.0005
        turns = self._turns
        first = True
        try:
            while True:
                if self._held is None:
                    self._held = await self.writer.connect()
                conn = self._held
                try:
                    # Checked with the connection in hand: tasks queued on this process's
                    # one writer connection would otherwise follow each other straight in.
                    if first and turns is not None and turns.others_waiting():
                        await _let_others_write(turns)
                    first = False
                    await conn.begin()
                    return conn
                except OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if time.monotonic() >= deadline:
                        raise DatabaseUnavailable("database is locked") from exc
                if turns is not None:
                    turns.waiting()
                await asyncio.sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE)
        finally:
            if turns is not None:
                turns.done()

    async def _release_held(self) -> None:
        conn, self._held = self._held, None
        if conn is not None:
            await conn.close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        with _unavailable_mapped():
            if self.is_sqlite:
                # Not ``async with``: its exit closes in a task of its own, a hop through the
                # loop per read during which other requests check out more connections (the
                # pool then opens and closes overflow connections under load). Inline SQLite
                # calls never suspend, so nothing can interrupt this close.
                conn = await self.reader.connect()
                try:
                    yield conn
                finally:
                    await conn.close()
            else:
                async with self.reader.connect() as conn:
                    yield conn

    async def dispose(self) -> None:
        if self._turns is not None:
            self._turns.close()
            self._turns = None
        if self.is_sqlite:
            await self._release_held()
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


@contextmanager
def _unavailable_mapped() -> Iterator[None]:
    """Turn a lost, refused or locked database into ``DatabaseUnavailable`` (a 503)."""
    try:
        yield
    except (
        OperationalError,
        DBAPIError,
        PendingRollbackError,
        PoolTimeout,
        OSError,
        ConnectionError,
    ) as exc:
        if _is_unavailable(exc):
            raise DatabaseUnavailable(str(exc).splitlines()[0]) from exc
        raise


def _is_unavailable(exc: BaseException) -> bool:
    # OSError covers refused connections and connect timeouts; PoolTimeout a pool that
    # stayed empty because PostgreSQL does not answer.
    if isinstance(exc, OSError | ConnectionError | PoolTimeout | PendingRollbackError):
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


# An inline SQLite call blocks the event loop while SQLite waits for a lock, so each call
# waits only briefly; ``Database._begin_sqlite`` retries writers asynchronously.
_SLICE_BUSY_MS = 20
_MAX_PAUSE = 0.004  # between tries for another process's write lock (s)
_WRITER_WAIT = 60.0  # longest a task waits for its turn at this process's writer (s)
_YIELD_LIMIT = 0.02  # longest a process stands back for another's waiting writer (s)


async def _let_others_write(turns: WriterTurns) -> None:
    """Stand back while another process waits for the write lock (bounded)."""
    end = time.monotonic() + _YIELD_LIMIT
    # The waiter is another process: there is nothing to await but the shared file.
    while turns.others_waiting() and time.monotonic() < end:  # noqa: ASYNC110
        await asyncio.sleep(0.001)


# A connection back from the pool is checked with a round trip only if it sat unused this
# long: under load connections come back within milliseconds, and a ping before every
# transaction was a tenth of a worker's CPU on PostgreSQL. A connection that died while
# briefly unused (a server restart) fails its first statement instead; that invalidates
# the pool, as a failed ping would, and the caller's retry (or the client's, on a 503)
# gets a fresh connection.
PING_AFTER_IDLE = 2.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["kirim_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("kirim_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            dbapi_conn.ping()
        except Exception as exc:
            # The pool discards this connection and tries another (or a new one).
            raise DisconnectionError(f"connection failed its ping: {exc}") from exc


def _ensure_wal(url: str, busy_ms: int) -> None:
    """Switch the file to WAL before any reader opens it.

    In the default rollback-journal mode a reader's lock blocks the writer; WAL is a
    property of the file, so setting it once here covers every later connection.
    """
    path = url.split("///", 1)[1] if "///" in url else ""
    if not path or path.startswith(":memory:"):
        return
    conn = sqlite3.connect(path, timeout=busy_ms / 1000)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def bind_plain_values_directly() -> None:
    """Adapters for None, bytes and bool that return what sqlite3 binds anyway.

    sqlite3 binds only int, float, str and bytearray without a look for an adapter; for any
    other value, with none registered, it asks the protocol for ``__adapt__`` and the value
    for ``__conform__``, and each miss builds and discards an AttributeError: about 1,400
    instructions a value, some 20,000 per accepted message (its NULL columns and its body).
    With an adapter the look-up is one dict probe. Registering one for a base type would
    send every value through the registry, so these three only.
    """
    # A C call, None -> None: cheaper than a Python function.
    null: Callable[[None], None] = {}.get  # type: ignore[assignment]
    sqlite3.register_adapter(type(None), null)  # bound as NULL
    sqlite3.register_adapter(bytes, bytes)  # the same object, bound as a BLOB
    sqlite3.register_adapter(bool, int)  # bound as 0 or 1, as a bool is


def _sqlite_setup(
    engine: AsyncEngine,
    *,
    busy_ms: int,
    set_wal: bool = True,
    then_busy_ms: int | None = None,
) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The dialect's do_begin, not the driver, decides when transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # The busy timeout first: switching to WAL needs a lock another process may hold.
        cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        if set_wal:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        if then_busy_ms is not None:
            cur.execute(f"PRAGMA busy_timeout={int(then_busy_ms)}")
        cur.close()

"""Fresh databases for tests: a migrated SQLite file per test, a PostgreSQL database per run.

PostgreSQL is the machine's real server (127.0.0.1:5432, user postgres). Each test session
(each xdist worker) creates its own database, migrates it once, and empties every table
before each test. A missing PostgreSQL is an error, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import asyncpg

from service.db.migrate import upgrade
from service.db.tables import metadata

PG_HOST = os.environ.get("KIRIM_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("KIRIM_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("KIRIM_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("KIRIM_TEST_PG_DB", "test")


def pg_url(name: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB, timeout=10
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_pg_database(tag: str) -> str:
    name = f"kirim_test_{tag}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    upgrade(pg_url(name))
    return name


def drop_pg_database(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def truncate_pg(name: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=name)
    try:
        # A previous test's processes may still hold connections (and row locks) here;
        # end them, so TRUNCATE cannot deadlock with a straggler.
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


def sqlite_template(directory: Path) -> Path:
    path = directory / "template.db"
    if not path.exists():
        upgrade(f"sqlite:///{path}")
    return path


def fresh_sqlite(template: Path, directory: Path) -> str:
    path = directory / "kirim.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"

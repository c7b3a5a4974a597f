"""Shared fixtures: every database test runs on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import databases


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return databases.sqlite_template(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(scope="session")
def pg_database(worker_id: str) -> Iterator[str]:
    name = databases.create_pg_database(worker_id.replace("-", "_"))
    try:
        yield name
    finally:
        databases.drop_pg_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        return databases.fresh_sqlite(template, tmp_path)
    name = request.getfixturevalue("pg_database")
    asyncio.run(databases.truncate_pg(name))
    return databases.pg_url(name)


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    return databases.fresh_sqlite(sqlite_template, tmp_path)


def pytest_configure(config: pytest.Config) -> None:
    # Test runs never send to a real relay or reach the network by accident.
    os.environ.setdefault("KIRIM_SMTP_URL", "smtp://127.0.0.1:9?tls=none")

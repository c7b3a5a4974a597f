"""The migrations build exactly the schema that ``service.db.tables`` describes.

Tables and indexes are declared twice, in the models and in the migrations; a change to
one without the other (an index dropped from a model but left in the database, written on
every insert and read by nothing) shows here as a difference, on both databases.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from service.db.engine import async_url
from service.db.tables import metadata


async def test_migrated_schema_has_the_tables_indexes_and_columns_of_the_models(
    database_url: str,
) -> None:
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_differences)
    finally:
        await engine.dispose()
    assert diff == []


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": False})
    return [d for d in compare_metadata(context, metadata) if not _alembic_own(d)]


def _alembic_own(change: Any) -> bool:
    return (
        isinstance(change, tuple)
        and change[0] == "remove_table"
        and change[1].name == "alembic_version"
    )

"""Running Alembic migrations from code (``kirim migrate``, ``serve`` and tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from service.db.engine import async_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["database_url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database to ``revision``; safe to run from several processes at once."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def sync_url(url: str) -> str:
    """A synchronous driver URL, for quick checks outside the event loop."""
    return async_url(url).replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")


def current_revision_sync(connection: object) -> str | None:
    ctx = MigrationContext.configure(connection)  # type: ignore[arg-type]
    return ctx.get_current_revision()


__all__ = ["MIGRATIONS", "alembic_config", "create_engine", "head_revision", "upgrade"]

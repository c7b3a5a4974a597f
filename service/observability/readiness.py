"""Readiness: the database answers and its schema is at this code's migration head.

The answer is cached for a moment so that probes from a load balancer and an orchestrator
cost one round trip between them, not one each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text

from service.db.engine import Database
from service.db.migrate import head_revision


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    database: str  # ok, or why not
    schema: str | None  # the database's revision
    expected: str | None  # this code's head revision
    at: float


async def check(db: Database, expected: str | None, now: float) -> Readiness:
    try:
        async with db.read() as conn:
            await conn.execute(text("SELECT 1"))
            try:
                found = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar()
            except Exception:
                found = None  # never migrated
    except Exception as exc:
        return Readiness(False, type(exc).__name__, None, expected, now)
    if found != expected:
        return Readiness(False, "ok", found, expected, now)
    return Readiness(True, "ok", found, expected, now)


class ReadinessProbe:
    def __init__(
        self,
        db: Database,
        *,
        max_age: float = 1.0,
        expected: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._expected = expected if expected is not None else head_revision()
        self._max_age = max_age
        self._clock = clock
        self._last: Readiness | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Readiness:
        async with self._lock:
            now = self._clock()
            if self._last is None or now - self._last.at > self._max_age:
                self._last = await check(self._db, self._expected, now)
            return self._last

"""Per-process operations state: database error counting, readiness, queue gauges, retention.

``start`` is called once by each entry point that owns a ``Database``; the retention loop
runs only where delivery workers run, so an API-only process never prunes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event

from service import retention
from service.db.engine import Database, _is_unavailable
from service.observability import record
from service.observability.queue_stats import CachedSnapshot
from service.observability.readiness import ReadinessProbe
from service.settings import Settings

log = logging.getLogger(__name__)


def count_database_errors(db: Database) -> None:
    """Count every error the engines raise, split into unavailable and other."""

    def on_error(ctx: Any) -> None:
        exc = ctx.original_exception
        kind = "unavailable" if ctx.is_disconnect or _is_unavailable(exc) else "other"
        record.database_error(kind)

    engines = {id(db.writer): db.writer, id(db.reader): db.reader}
    for engine in engines.values():
        if not event.contains(engine.sync_engine, "handle_error", on_error):
            event.listen(engine.sync_engine, "handle_error", on_error)


@dataclass
class Operations:
    db: Database
    readiness: ReadinessProbe
    queue: CachedSnapshot
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def aclose(self) -> None:
        self._stop.set()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def start(settings: Settings, db: Database, *, jobs: bool) -> Operations:
    """Instrument ``db`` and, when ``jobs``, start the periodic retention loop."""
    count_database_errors(db)
    ops = Operations(db, ReadinessProbe(db), CachedSnapshot(db))
    if jobs:
        ops._tasks.append(
            asyncio.create_task(
                retention.run_periodically(
                    db,
                    retention.policy_from(settings),
                    ops._stop,
                    interval=settings.retention_interval,
                ),
                name="retention",
            )
        )
    return ops


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """A plain /metrics listener for processes without the API (``kirim worker``)."""
    from prometheus_client import start_http_server

    from service.observability import metrics

    start_http_server(port, addr=host, registry=metrics.get().registry)
    log.info("metrics on port %d", port)

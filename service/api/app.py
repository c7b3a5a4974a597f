"""The FastAPI application: ``create_app(settings)`` wires routes, errors and lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.types import ASGIApp

from service import __version__
from service.api import errors, heap
from service.api.activity import ApiActivity, TrackActivity
from service.api.fast_send import SendFastLane
from service.api.limits import BodyLimit, ConcurrencyCap, limits_from
from service.api.routes import (
    admin,
    batch,
    events,
    health,
    keys,
    messages,
    metrics,
    sending,
    suppressions,
    templates,
    webhooks,
)
from service.api.runtime import Runtime
from service.bounces.service import start_poller
from service.db import queue
from service.db.accepts import GroupCommitter
from service.db.engine import Database
from service.db.notify import QueueSignals
from service.delivery.factory import build_worker, retry_policy, smtp_transport
from service.delivery.idle_gate import IdleDeliveryGate
from service.delivery.transport import Transport
from service.observability import operations
from service.observability.tracing import TraceContextMiddleware
from service.settings import Settings
from service.webhooks.commit_hook import PendingCommitHook
from service.webhooks.dispatcher import Dispatcher, options_from

log = logging.getLogger(__name__)

API_QUIET = 0.05  # seconds without a request before the API process may deliver

DESCRIPTION = """\
Kirim accepts email over HTTP, stores each message durably, delivers it over SMTP from
background workers, reports the status of every recipient, and pushes every delivery event
to subscribed webhooks, signed.

Authenticate with `Authorization: Bearer <api key>`. Errors are `application/problem+json`
(RFC 9457) and name each invalid field.
"""


class KirimApp(FastAPI):
    """FastAPI with ``front`` (the send fast lane) in front of its whole middleware stack,
    error handling included: the hot path pays for none of the layers it does not need."""

    front: Callable[[ASGIApp], ASGIApp] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return stack if self.front is None else self.front(stack)


def create_app(
    settings: Settings,
    *,
    run_workers: bool = True,
    transport: Transport | None = None,
    idle_delivery: bool = False,
) -> FastAPI:
    """Build the app; nothing connects until the server starts it (lifespan).

    ``run_workers``: deliver, send webhooks and read bounces in this process.
    ``idle_delivery`` (without ``run_workers``): deliver too, but only while no request is
    being served and accepted mail waits unclaimed by the delivery processes.
    """
    activity = ApiActivity()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.from_settings(settings)
        app.state.operations = operations.start(settings, db, jobs=run_workers)
        stop = asyncio.Event()
        worker_task: asyncio.Task[None] | None = None
        worker = None
        dispatcher = None
        hooks_task: asyncio.Task[None] | None = None
        bounce_task: asyncio.Task[None] | None = None
        carrier = transport
        helper = gate = None
        if run_workers:
            carrier = carrier or smtp_transport(settings)
            worker = build_worker(settings, db, carrier)
        elif idle_delivery:
            carrier = carrier or smtp_transport(settings)
            gate = IdleDeliveryGate(
                lambda: activity.idle_for(API_QUIET), lambda: queue.next_due(db)
            )
            helper = build_worker(settings, db, carrier, gate=gate)
        # Wakes the local worker and, on PostgreSQL, NOTIFYs workers in other processes.
        signals = QueueSignals.from_settings(
            settings, wake=worker.wake if worker else None, publish=True
        )
        signals.start()
        # With no dispatcher here, webhook deliveries queued by this process's commits are
        # announced to the dispatchers of worker processes.
        hook = None
        if worker is None:
            hook = PendingCommitHook(db.writer.sync_engine, signals.webhooks_pending)
            hook.attach()
        on_commit = signals.committed
        if gate is not None:
            on_commit = _both(signals.committed, gate.accepted)
        committer = GroupCommitter(db, on_commit=on_commit)
        committer.start()
        app.state.runtime = Runtime(
            settings=settings,
            db=db,
            committer=committer,
            policy=retry_policy(settings),
            limits=limits_from(settings),
        )
        app.state.worker = worker
        if worker is not None:
            worker_task = asyncio.create_task(worker.run(stop), name="delivery-worker")
            dispatcher = Dispatcher(db, options_from(settings))
            hooks_task = asyncio.create_task(dispatcher.run(stop), name="webhook-dispatcher")
            bounce_task = start_poller(settings, db, stop)
        app.state.dispatcher = dispatcher
        if helper is not None:
            worker_task = asyncio.create_task(helper.run(stop), name="idle-delivery")
        heap.settle()
        try:
            yield
        finally:
            stop.set()
            if worker_task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker_task
            if hooks_task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await hooks_task
            if bounce_task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await bounce_task
            await committer.stop()
            if hook is not None:
                hook.detach()
            await signals.aclose()
            if carrier is not None and transport is None:
                await carrier.aclose()
            await app.state.operations.aclose()
            await db.dispose()

    app = KirimApp(
        title="Kirim",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Kirim exports no OpenTelemetry (see Operations in README.md); FastAPI's own would
        # look up the global providers on every request, 2 % of an accept's CPU.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(messages.router)
    app.include_router(batch.router)
    app.include_router(sending.router)
    app.include_router(templates.router)
    app.include_router(suppressions.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(keys.router)
    app.include_router(admin.router)
    app.include_router(metrics.router)
    webhooks.document_events(app)
    app.front = partial(
        SendFastLane,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
        activity=activity if idle_delivery else None,
    )
    # Innermost first.
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, max_json_depth=settings.max_json_depth
    )
    # Outside BodyLimit: a batch waiting for its turn has not been read into memory yet.
    app.add_middleware(ConcurrencyCap, path="/v1/messages/batch", limit=settings.batch_concurrency)
    app.add_middleware(TraceContextMiddleware)
    if idle_delivery:
        app.add_middleware(TrackActivity, activity=activity)
    return app


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        first()
        second()

    return both

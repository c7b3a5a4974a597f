"""The webhook dispatcher: claim due deliveries, sign, POST, settle.

It runs beside the delivery worker (``kirim serve`` with workers, ``kirim worker``) and
never inside a request or the SMTP settle path. Each attempt re-checks the URL with the
SSRF guard, signs with every current secret, posts through the pinned client, and is
settled fenced by its lease token. Results are written in shared transactions. A commit
that created deliveries in this process wakes it at once; otherwise it polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.db.engine import Database, DatabaseUnavailable
from service.observability import record, tracing
from service.settings import Settings
from service.webhooks import delivery_queue as dq
from service.webhooks.commit_hook import PendingCommitHook
from service.webhooks.events import body_bytes, envelope
from service.webhooks.http_client import PostOutcome, WebhookClient, create_client, post_event
from service.webhooks.schedule import DEFAULT_DELAYS, Action, classify, parse_delays, retry_delay
from service.webhooks.secrets import current_secrets
from service.webhooks.signing import headers
from service.webhooks.ssrf import IPNetwork, Resolver, UnsafeUrl, check_url, parse_networks
from service.webhooks.ssrf import system_resolver as _system_resolver

log = logging.getLogger(__name__)

RESPONSE_EXCERPT = 1000  # characters of a response body kept per attempt
# After a wake that found nothing: a PostgreSQL commit may land just after our claim.
_RECHECK_AFTER_WAKE = 0.05


@dataclass(frozen=True, slots=True)
class DispatcherOptions:
    delays: tuple[float, ...] = DEFAULT_DELAYS
    allowed_networks: tuple[IPNetwork, ...] = ()
    timeout: float = 15.0
    per_endpoint: int = 4
    disable_after: float = 5 * 24 * 3600.0
    lease_seconds: float = 120.0
    poll_interval: float = 1.0
    max_inflight: int = 128
    shutdown_grace: float = 5.0


def options_from(settings: Settings) -> DispatcherOptions:
    return DispatcherOptions(
        delays=parse_delays(settings.webhook_retry_delays),
        allowed_networks=parse_networks(settings.webhook_allowed_networks),
        timeout=settings.webhook_timeout,
        per_endpoint=settings.webhook_concurrency_per_endpoint,
        disable_after=settings.webhook_disable_after,
        lease_seconds=max(settings.webhook_lease_seconds, settings.webhook_timeout + 5),
        poll_interval=settings.worker_poll_interval,
    )


@dataclass
class _Stats:
    succeeded: int = 0
    failed_attempts: int = 0
    settled: list[float] = field(default_factory=list)


class Dispatcher:
    def __init__(
        self,
        db: Database,
        options: DispatcherOptions,
        *,
        client: WebhookClient | None = None,
        resolver: Resolver = _system_resolver,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.opt = options
        self._own_client = client is None
        self.client = client or create_client(
            total_timeout=options.timeout, connect_timeout=min(5.0, options.timeout)
        )
        self.resolver = resolver
        self.clock = clock
        self.rng = rng or random.Random()
        self.stats = _Stats()
        self._wake = asyncio.Event()
        self._woken = False
        self._inflight: dict[str, str] = {}  # delivery id -> lease token
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: list[dq.AttemptResult] = []
        self._settle_wake = asyncio.Event()
        self._hook = PendingCommitHook(db.writer.sync_engine, self.wake)
        self._closing = False

    # -- waking ---------------------------------------------------------------------

    def wake(self) -> None:
        self._woken = True
        self._wake.set()

    def _listen(self, on: bool) -> None:
        if on:
            self._hook.attach()
        else:
            self._hook.detach()

    # -- main loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._closing = False
        self._listen(True)
        settler = asyncio.create_task(self._settle_loop(), name="webhook-settle")
        reaper = asyncio.create_task(self._reaper(stop), name="webhook-reaper")
        try:
            await self._claim_loop(stop)
        finally:
            self._listen(False)
            await self._finish_tasks()
            self._closing = True
            self._settle_wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await settler
            await self._release_unfinished()
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            if self._own_client:
                await self.client.aclose()

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            capacity = self.opt.max_inflight - len(self._inflight)
            woken, self._woken = self._woken, False
            self._wake.clear()
            if capacity > 0:
                token = uuid.uuid4().hex
                try:
                    claimed = await dq.claim(
                        self.db,
                        token=token,
                        limit=capacity,
                        per_endpoint=self.opt.per_endpoint,
                        lease_seconds=self.opt.lease_seconds,
                        now=self.clock(),
                    )
                    backoff = 0.1
                except DatabaseUnavailable as exc:
                    log.warning("webhook claim failed, database unavailable: %s", exc)
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if claimed:
                    await self._start(token, claimed)
                    continue
            await self._idle_wait(stop, capacity > 0, _RECHECK_AFTER_WAKE if woken else None)

    async def _idle_wait(self, stop: asyncio.Event, has_room: bool, cap: float | None) -> None:
        timeout = self.opt.poll_interval
        if has_room:
            with contextlib.suppress(DatabaseUnavailable):
                due = await dq.next_due(self.db)
                # Due now but not claimable: its endpoint is at its cap; a finish wakes us.
                if due is not None and due > self.clock():
                    timeout = min(timeout, due - self.clock())
        if cap is not None:
            timeout = min(timeout, cap)
        if self._wake.is_set() or stop.is_set():
            return
        waiter = asyncio.create_task(self._wake.wait())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
            stopper.cancel()

    async def _start(self, token: str, claimed: Sequence[dq.ClaimedDelivery]) -> None:
        for c in claimed:
            self._inflight[c.id] = token
        try:
            endpoints, events = await dq.load(self.db, claimed)
        except DatabaseUnavailable as exc:
            # The leases expire and the reaper hands the deliveries back.
            log.warning("webhook load failed: %s", exc)
            for c in claimed:
                self._inflight.pop(c.id, None)
            return
        for c in claimed:
            task = asyncio.create_task(
                self._deliver(token, c, endpoints.get(c.endpoint_id), events.get(c.event_id or -1))
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- one attempt ------------------------------------------------------------------

    async def _deliver(
        self,
        token: str,
        item: dq.ClaimedDelivery,
        endpoint: dq.EndpointRow | None,
        ev: dq.EventRow | None,
    ) -> None:
        try:
            result = await self._attempt(token, item, endpoint, ev)
        except Exception as exc:  # a bug must not lose the delivery: retry it
            log.exception("webhook attempt crashed")
            result = self._retry_result(
                token,
                item,
                self.clock(),
                PostOutcome(None, 0.0, error=f"internal error: {type(exc).__name__}"),
            )
        record.webhook_attempt(result, item.event_type, ev.data if ev else None)
        self._pending.append(result)
        self._settle_wake.set()

    async def _attempt(
        self,
        token: str,
        item: dq.ClaimedDelivery,
        endpoint: dq.EndpointRow | None,
        ev: dq.EventRow | None,
    ) -> dq.AttemptResult:
        started = self.clock()
        number = item.attempts + 1
        if endpoint is None or not endpoint.enabled:
            why = "endpoint deleted" if endpoint is None else "endpoint disabled"
            return _result(token, item, number, started, dq.CANCELLED, error=why, attempted=False)
        if item.payload is not None:
            payload = item.payload
        elif ev is not None:
            payload = envelope(ev.type, ev.created_at, {**ev.data, "event_id": ev.id})
        else:
            return _result(
                token,
                item,
                number,
                started,
                dq.FAILED,
                error="the event no longer exists",
                attempted=False,
            )
        body = body_bytes(payload)
        try:
            checked = await check_url(
                endpoint.url, self.opt.allowed_networks, resolver=self.resolver
            )
        except UnsafeUrl as exc:
            outcome = PostOutcome(None, 0.0, error=f"refused by the SSRF guard: {exc.reason}")
        else:
            signing = current_secrets(endpoint.secrets, started)
            hdrs = headers(signing, item.webhook_id, int(started), body)
            hdrs = await tracing.webhook_headers(self.db, hdrs, ev.data if ev else None)
            outcome = await post_event(self.client, checked, hdrs, body)
        return self._retry_result(token, item, started, outcome)

    def _retry_result(
        self, token: str, item: dq.ClaimedDelivery, started: float, outcome: PostOutcome
    ) -> dq.AttemptResult:
        number = item.attempts + 1
        verdict = classify(outcome.status_code, outcome.error, retry_after=outcome.retry_after)
        kw: dict[str, Any] = {
            "status_code": outcome.status_code,
            "latency": outcome.latency,
            "response": outcome.response_text[:RESPONSE_EXCERPT],
        }
        if verdict.action is Action.SUCCESS:
            self.stats.succeeded += 1
            return _result(token, item, number, started, dq.SUCCEEDED, error=None, **kw)
        self.stats.failed_attempts += 1
        if verdict.action is Action.DISABLE:
            return _result(
                token, item, number, started, dq.FAILED, error=verdict.reason, gone=True, **kw
            )
        delay = retry_delay(verdict, number, self.opt.delays, self.rng)
        if delay is None:
            why = f"{verdict.reason}; no retries left"
            return _result(token, item, number, started, dq.FAILED, error=why, **kw)
        return _result(
            token,
            item,
            number,
            started,
            dq.PENDING,
            error=verdict.reason,
            next_attempt_at=self.clock() + delay,
            **kw,
        )

    # -- settling, reaping, stopping --------------------------------------------------

    async def _settle_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._settle_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._settle_wake.wait(), timeout=0.5)
                continue
            batch, self._pending = self._pending, []
            delay = 0.05
            while True:
                try:
                    await dq.settle(
                        self.db,
                        results=batch,
                        now=self.clock(),
                        disable_after=self.opt.disable_after,
                    )
                    break
                except DatabaseUnavailable as exc:
                    log.warning("webhook settle failed, retrying: %s", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            for r in batch:
                self._inflight.pop(r.delivery_id, None)
            self.stats.settled.append(self.clock())
            self.wake()  # slots freed: claim again

    async def _reaper(self, stop: asyncio.Event) -> None:
        interval = min(10.0, max(0.05, self.opt.lease_seconds / 4))
        while not stop.is_set():
            await _sleep_or_stop(stop, interval)
            try:
                n = await dq.reap(self.db, now=self.clock())
            except DatabaseUnavailable as exc:
                log.warning("webhook reaper failed: %s", exc)
                continue
            if n:
                log.warning("returned %d webhook deliveries with expired leases", n)
                self.wake()

    async def _finish_tasks(self) -> None:
        """Give in-flight attempts a grace period, then cancel them."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=self.opt.shutdown_grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _release_unfinished(self) -> None:
        by_token: dict[str, list[str]] = {}
        for delivery_id, token in self._inflight.items():
            by_token.setdefault(token, []).append(delivery_id)
        for token, ids in by_token.items():
            with contextlib.suppress(DatabaseUnavailable):
                await dq.release(self.db, token=token, ids=ids, now=self.clock())
        self._inflight.clear()


def _result(
    token: str,
    item: dq.ClaimedDelivery,
    number: int,
    at: float,
    status: str,
    *,
    error: str | None,
    status_code: int | None = None,
    latency: float = 0.0,
    response: str = "",
    next_attempt_at: float | None = None,
    gone: bool = False,
    attempted: bool = True,
) -> dq.AttemptResult:
    return dq.AttemptResult(
        delivery_id=item.id,
        token=token,
        endpoint_id=item.endpoint_id,
        number=number,
        at=at,
        status=status,
        next_attempt_at=next_attempt_at,
        status_code=status_code,
        latency=latency,
        error=error,
        response=response,
        gone=gone,
        attempted=attempted,
    )


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)

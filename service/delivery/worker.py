"""The delivery worker: claim due recipients, send them, settle the results.

One loop claims work while there is capacity; each message becomes one job on the
transport; results flow to a settle batcher that writes them in shared transactions. A
heartbeat keeps the leases of in-flight work alive, and a reaper returns leases that other
(dead) workers let expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from service.bounces.return_path import make_return_path
from service.db import queue
from service.db.engine import Database, DatabaseUnavailable
from service.delivery.decide import decide, expire
from service.delivery.slots import PrioritySlots, ReleaseOnce
from service.delivery.together import run_together
from service.delivery.transport import (
    Outcome,
    Outgoing,
    RecipientResult,
    Reply,
    Stage,
    Transport,
)
from service.domain.body_budget import parts_within
from service.domain.claim_pace import ClaimPace
from service.domain.fair_share import Rotation
from service.domain.retry import RetryPolicy
from service.domain.status import Status
from service.observability import record

log = logging.getLogger(__name__)

FAULT_AFTER_SMTP = "after_smtp_before_settle"
HIGH = 0  # priority value of `high`
EXPRESS_ROWS = 16  # high-priority rows a full worker may take beyond its batch
CLAIMS_KEPT = 64  # recent claims remembered for inspection (``Worker.recent_claims``)

Settle = Callable[..., Awaitable[list[str]]]  # ``queue.settle``'s shape
# An enum member's ``.value`` is a property call; a settlement needs three.
_VALUE: dict[Enum, str] = {m: m.value for e in (Status, Outcome, Stage) for m in e}
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    lease_seconds: float = 900.0
    batch_size: int = 1024
    body_budget: int = 64 << 20  # most MIME bytes of claimed mail held in memory at once
    poll_interval: float = 1.0
    shutdown_grace: float = 30.0
    concurrency: int = 16  # sessions at once; match the transport's pool size
    heartbeat_interval: float | None = None  # None: a third of the lease
    wake_coalesce: float = 0.005  # seconds to gather more work after a wake-up
    settle_gather: float = 0.02  # longest a result waits for others to share its settle (s)
    fault_injection: str = ""  # testing only: see Settings.fault_injection
    return_path: str = ""  # bounce address: MAIL FROM becomes a signed one per recipient
    return_path_secret: bytes = b""
    reap_leases: bool = True  # a helper beside a full worker leaves reaping to it


class Worker:
    def __init__(
        self,
        db: Database,
        transport: Transport,
        *,
        policy: RetryPolicy,
        options: WorkerOptions,
        name: str | None = None,
        clock: Callable[[], float] = time.time,
        gate: Callable[[], Awaitable[float]] | None = None,
    ) -> None:
        """``gate``, if given, is asked before each claim: it answers how many seconds to
        wait before asking again, 0 to claim now (see ``idle_gate``)."""
        self.db = db
        self._gate = gate
        self.transport = transport
        self.policy = policy
        self.opt = options
        self.name = name or f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self._rng = random.Random()
        self._wake = asyncio.Event()
        self._inflight: dict[str, set[str]] = {}  # lease token -> recipient ids not yet settled
        self._unstarted: dict[str, set[str]] = defaultdict(set)
        self._jobs: set[asyncio.Task[None]] = set()
        self._settler = _SettleBatcher(
            db,
            clock,
            give_up_after=options.shutdown_grace,
            gather=options.settle_gather,
            outstanding=lambda: self.inflight,
        )
        self._slots = PrioritySlots(options.concurrency)
        self._rotation = Rotation()  # which tenants get the spare rows of the next claim
        self._draining = False
        self._refill_at = 0  # half the claim target, set before each claim
        self._pace = ClaimPace(options.batch_size)
        self._last_claim = 0  # rows the latest claim returned
        # (rows asked, rows got) of the latest claims that found work, oldest first.
        self.recent_claims: deque[tuple[int, int]] = deque(maxlen=CLAIMS_KEPT)
        self.sent = 0

    def wake(self) -> None:
        """Called after an accept commits, so an idle worker starts at once."""
        self._wake.set()

    @property
    def inflight(self) -> int:
        return sum(len(v) for v in self._inflight.values())

    async def run(self, stop: asyncio.Event) -> None:
        self._settler.start()
        # The heartbeat runs until the drain is over (in-flight leases still need it), the
        # reaper until ``stop``. Neither is cancelled: a cancel in the middle of a query
        # (on PostgreSQL) ended the worker itself with that CancelledError.
        drained = asyncio.Event()
        side = [asyncio.create_task(self._heartbeat(drained), name="lease-heartbeat")]
        if self.opt.reap_leases:
            side.append(asyncio.create_task(self._reaper(stop), name="lease-reaper"))
        cut_off: dict[str, set[str]] = {}
        try:
            await self._claim_loop(stop)
        finally:
            cut_off = await self._drain()
            drained.set()
            await asyncio.gather(*side)  # each ends after at most its current query
            await self._settler.stop()
            await self._abandon(cut_off)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            target = self._pace.target(time.monotonic())
            self._refill_at = target // 2
            capacity = target - self.inflight
            # A full worker woken by new mail still takes a few high-priority rows at once
            # (they go to the next free session), so a one-time code never waits for the
            # low-priority rows this worker already holds to be sent.
            express = (
                capacity <= 0
                and self._wake.is_set()
                and capacity > -EXPRESS_ROWS
                and self._gate is None  # a helper leaves urgent mail to the full workers
            )
            if express:
                self._wake.clear()
                with contextlib.suppress(DatabaseUnavailable):
                    express = await queue.high_due(self.db, self.clock())
            claimed: list[queue.Claimed] = []
            if capacity > 0 and self._gate is not None:
                pause = await self._gate()
                if pause > 0:
                    await _sleep_or_stop(stop, pause)
                    continue
            if capacity > 0 or express:
                self._wake.clear()
                token = uuid.uuid4().hex
                try:
                    claimed = await queue.claim(
                        self.db,
                        owner=self.name,
                        token=token,
                        limit=EXPRESS_ROWS if express else capacity,
                        lease_seconds=self.opt.lease_seconds,
                        now=self.clock(),
                        rotation=self._rotation,
                        max_priority=HIGH if express else None,
                    )
                    backoff = 0.1
                    self._last_claim = len(claimed)
                    if claimed:
                        self.recent_claims.append(
                            (EXPRESS_ROWS if express else capacity, len(claimed))
                        )
                except Exception as exc:
                    # A worker that dies here would leave the API accepting mail nobody sends.
                    if isinstance(exc, DatabaseUnavailable):
                        log.warning("claim failed, database unavailable: %s", exc)
                    else:
                        log.exception("claim failed")
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if claimed:
                    self._start_batch(token, claimed)
                    continue
            await self._idle_wait(stop, full=capacity <= 0)

    async def _idle_wait(self, stop: asyncio.Event, *, full: bool) -> None:
        timeout = self.opt.poll_interval
        if not full:
            with contextlib.suppress(DatabaseUnavailable):
                due = await queue.next_due(self.db)
                if due is not None:
                    timeout = max(0.0, min(timeout, due - self.clock()))
        if timeout <= 0:
            return
        waiter = asyncio.create_task(self._wake.wait())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait(
                {waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            stopper.cancel()
        if (
            self._wake.is_set()
            and not stop.is_set()
            and self.opt.wake_coalesce > 0
            and self._last_claim > 1
        ):
            # Under load accepts arrive in bursts: a few milliseconds here turn many one-row
            # claims (and settles) into one. A trickle (the last claim found one row) is
            # claimed at once: there is nothing to gather, only latency to add.
            await asyncio.sleep(self.opt.wake_coalesce)

    def _start_batch(self, token: str, claimed: list[queue.Claimed]) -> None:
        self._inflight[token] = {c.id for c in claimed}
        self._unstarted[token] = {c.id for c in claimed}
        task = asyncio.create_task(self._run_batch(token, claimed))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _run_batch(self, token: str, claimed: list[queue.Claimed]) -> None:
        try:
            by_message: dict[str, list[queue.Claimed]] = defaultdict(list)
            sizes: dict[str, int] = {}
            for c in claimed:
                by_message[c.message_id].append(c)
                sizes[c.message_id] = c.size
            # Parts of half the budget: a worker may hold two claims at once (it claims
            # more while half of one is still waiting).
            for part in parts_within(sorted(by_message), sizes, self.opt.body_budget // 2):
                if self._draining:  # the rest was released to the queue
                    break
                bodies = await _retry_db(functools.partial(queue.load_bodies, self.db, part))
                await run_together(
                    [self._send_message(token, bodies[mid], by_message[mid]) for mid in part]
                )
        finally:
            self._inflight.pop(token, None)
            self._unstarted.pop(token, None)
            self._wake.set()

    async def _send_message(
        self, token: str, body: queue.MessageBody, group: list[queue.Claimed]
    ) -> None:
        now = self.clock()
        pending = self._unstarted.get(token, set())
        expired = [c for c in group if now >= c.deadline and c.id in pending]
        pending.difference_update(c.id for c in expired)
        settlements = [self._expired(token, body, c, now) for c in expired]
        live = [c for c in group if now < c.deadline]
        if live:
            # Plain acquire and release rather than a context manager: this runs once per
            # message, and the context-manager machinery cost more than the slot itself.
            await self._slots.acquire(min(c.priority for c in live))
            slot = ReleaseOnce(self._slots)
            try:
                # A drain may have released these claims while this job waited for a slot.
                live = [c for c in live if c.id in pending and not self._draining]
                pending.difference_update(c.id for c in live)
                if live and self.opt.return_path:
                    # A signed envelope sender per recipient names it in any bounce, at the
                    # cost of one transaction each (MAIL FROM is per transaction).
                    for one in await asyncio.gather(
                        *(
                            self._attempt(token, body, [c], mail_from=self._return_path(body, c))
                            for c in live
                        )
                    ):
                        settlements += one
                elif live:
                    # The slot passes to the next message as soon as the transport can take
                    # it, while this one waits for the reply to its final dot.
                    settlements += await self._attempt(token, body, live, slot.release)
            finally:
                slot.release()
        await self._settler.submit(settlements)  # and logged there, once committed
        before = self.inflight
        self._pace.settled(len(settlements))
        for s in settlements:
            self._inflight.get(token, set()).discard(s.recipient_id)
            if s.status == "sent":
                self.sent += 1
        if before > self._refill_at >= self.inflight:
            # Claim more while half the batch is still queued here: new urgent work is
            # claimed (and overtakes the rest) without waiting for the whole batch to end,
            # and claims stay large.
            self._wake.set()

    def _return_path(self, body: queue.MessageBody, c: queue.Claimed) -> str:
        return make_return_path(self.opt.return_path, body.id, c.id, self.opt.return_path_secret)

    async def _attempt(
        self,
        token: str,
        body: queue.MessageBody,
        live: list[queue.Claimed],
        on_handoff: Callable[[], None] | None = None,
        mail_from: str | None = None,
    ) -> list[queue.Settlement]:
        """One SMTP delivery of ``body`` to ``live``; a settlement per recipient."""
        job = Outgoing(
            mail_from=mail_from or body.sender,
            recipients=[c.email for c in live],
            data=body.mime,
            smtputf8=body.smtputf8,
            on_handoff=on_handoff,
        )
        started = self.clock()
        try:
            result = await self.transport.send(job)
            results = {r.recipient: r for r in result.results}
        except Exception as exc:
            log.exception("transport raised; treating as a temporary failure")
            results = {}
            result_stage = Stage.CONNECT
            fallback = Reply.local(f"internal transport error: {type(exc).__name__}")
        else:
            result_stage = result.stage
            fallback = Reply.local("no result for recipient")
        if self.opt.fault_injection == FAULT_AFTER_SMTP and any(
            r.outcome is Outcome.ACCEPTED for r in results.values()
        ):
            os.kill(os.getpid(), signal.SIGKILL)
        duration = self.clock() - started
        settlements = []
        for c in live:
            r = results.get(c.email) or RecipientResult(
                c.email, Outcome.TEMPORARY, fallback, result_stage
            )
            settlements.append(self._settlement(token, body, c, r, started, duration))
        return settlements

    def _settlement(
        self,
        token: str,
        body: queue.MessageBody,
        c: queue.Claimed,
        r: RecipientResult,
        started: float,
        duration: float,
    ) -> queue.Settlement:
        number = c.attempts + 1
        now = self.clock()
        d = decide(
            r, attempts=number, now=now, deadline=c.deadline, policy=self.policy, rng=self._rng
        )
        return queue.Settlement(
            recipient_id=c.id,
            token=token,
            message_id=c.message_id,
            tenant_id=c.tenant_id,
            email=c.email,
            status=_VALUE[d.status],
            attempt_number=number,
            next_attempt_at=d.next_attempt_at,
            reason=d.reason,
            event_type=d.event,
            outcome=_VALUE[r.outcome],
            stage=_VALUE[r.stage],
            code=r.reply.code,
            enhanced=r.reply.enhanced,
            reply=r.reply.text,
            started_at=started,
            duration=duration,
            # Every attempt after one that may have delivered is itself a possible duplicate.
            possible_duplicate=r.possible_duplicate or c.lease_lost or c.possible_duplicate,
            tags=body.tags,
            metadata=body.metadata,
            traceparent=body.traceparent,
        )

    def _expired(
        self, token: str, body: queue.MessageBody, c: queue.Claimed, now: float
    ) -> queue.Settlement:
        d = expire(now)
        return queue.Settlement(
            recipient_id=c.id,
            token=token,
            message_id=c.message_id,
            tenant_id=c.tenant_id,
            email=c.email,
            status=d.status.value,
            attempt_number=c.attempts,
            next_attempt_at=None,
            reason=d.reason,
            event_type=d.event,
            outcome="expired",
            stage="",
            code=None,
            enhanced=None,
            reply="queue lifetime or expires_at passed before delivery",
            started_at=now,
            duration=0.0,
            possible_duplicate=False,
            tags=body.tags,
            metadata=body.metadata,
            attempted=False,
            traceparent=body.traceparent,
        )

    async def _drain(self) -> dict[str, set[str]]:
        """Graceful stop: release unstarted claims, give in-flight sessions a grace period.

        Returns the claims of sessions cut off after the grace period, by lease token.
        """
        self._draining = True
        for token, ids in list(self._unstarted.items()):
            if not ids:
                continue
            # Forget them first, so no waiting job starts them while the release runs.
            released = list(ids)
            ids.clear()
            self._inflight.get(token, set()).difference_update(released)
            try:
                await queue.release(self.db, token=token, ids=released, now=self.clock())
            except Exception as exc:  # the lease expires and a reaper returns them
                log.warning("could not release %d claims: %s", len(released), exc)
        cut_off: dict[str, set[str]] = {}
        if self._jobs:
            _done, pending = await asyncio.wait(set(self._jobs), timeout=self.opt.shutdown_grace)
            if pending:
                cut_off = {t: set(ids) for t, ids in self._inflight.items() if ids}
                log.warning("cutting off %d sessions after the shutdown grace", len(pending))
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        return cut_off

    async def _abandon(self, cut_off: dict[str, set[str]]) -> None:
        """Return cut-off claims to the queue now; they may have passed the final dot."""
        for token, ids in cut_off.items():
            try:
                await queue.abandon(self.db, token=token, ids=list(ids), now=self.clock())
            except Exception as exc:  # the lease expires and a reaper returns them
                log.warning("could not return %d cut-off claims: %s", len(ids), exc)

    async def _heartbeat(self, done: asyncio.Event) -> None:
        interval = self.opt.heartbeat_interval or max(0.05, self.opt.lease_seconds / 3)
        while not done.is_set():
            await _sleep_or_stop(done, interval)
            if done.is_set():
                return
            tokens = [t for t, ids in self._inflight.items() if ids]
            if tokens:
                try:
                    await queue.extend_leases(
                        self.db,
                        tokens=tokens,
                        lease_seconds=self.opt.lease_seconds,
                        now=self.clock(),
                    )
                except Exception as exc:
                    log.warning("lease heartbeat failed: %s", exc)

    async def _reaper(self, stop: asyncio.Event) -> None:
        interval = min(10.0, max(0.05, self.opt.lease_seconds / 4))
        while not stop.is_set():
            await _sleep_or_stop(stop, interval)
            if stop.is_set():
                return
            try:
                n = await queue.reap(self.db, now=self.clock())
            except Exception as exc:
                log.warning("reaper failed: %s", exc)
                continue
            record.lease_reaps(n)
            if n:
                log.warning("returned %d recipients with expired leases to the queue", n)
                self._wake.set()


class _SettleBatcher:
    """Collects settlements from concurrent jobs and writes them together.

    Every write transaction holds SQLite's one write lock, which the API's accepts need
    too, and costs a sync however few rows it carries; so while more results are on their
    way (``outstanding`` counts recipients not yet settled), a settle waits up to
    ``gather`` seconds for them to fill a batch. The last result of a burst, and a
    trickle's only one, are written at once.
    """

    def __init__(
        self,
        db: Database,
        clock: Callable[[], float],
        *,
        give_up_after: float = 30.0,
        gather: float = 0.0,
        outstanding: Callable[[], int] | None = None,
        full: int = 128,
        settle: Settle = queue.settle,
    ) -> None:
        self._db = db
        self._write = settle
        self._clock = clock
        self._give_up_after = give_up_after
        self._gather = gather
        self._outstanding = outstanding
        self._full = full
        self._closing_since: float | None = None
        self._pending: list[tuple[list[queue.Settlement], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="settle-batcher")

    async def stop(self) -> None:
        self._closing = True
        self._closing_since = time.monotonic()
        self._wake.set()
        if self._task:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, items: list[queue.Settlement]) -> None:
        if not items:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((items, fut))
        self._wake.set()
        # This caller's own future: cancelling the caller cancels only it, and the items
        # are written all the same (no shield needed, nor its extra future per call).
        await fut

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather_more()
            batch, self._pending = self._pending, []
            items = [s for group, _ in batch for s in group]
            done = await self._settle(items)
            if done is not None and len(done) < len(items):
                stale = len(items) - len(done)
                log.warning("dropped %d results whose lease was lost to another worker", stale)
                kept = set(done)
                items = [s for s in items if s.recipient_id in kept]
            if done is not None:
                record.settled(items)  # a line per attempt written, metrics counted
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            # Let those jobs count their results as settled before the next gathering
            # waits for the ones still outstanding.
            await asyncio.sleep(0)

    async def _gather_more(self) -> None:
        if self._gather <= 0 or self._outstanding is None:
            return
        end = time.monotonic() + self._gather
        while not self._closing:
            waiting = sum(len(group) for group, _ in self._pending)
            if waiting >= self._full or self._outstanding() <= waiting:
                return
            left = end - time.monotonic()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=left)

    async def _settle(self, items: list[queue.Settlement]) -> list[str] | None:
        """Write ``items``, retrying while the database is unavailable; None if given up."""
        delay = 0.05
        while True:
            try:
                return await self._write(self._db, items=items, now=self._clock())
            except Exception as exc:
                # Keep the leases (the heartbeat still runs) and try again; if the lease
                # runs out first, the fence discards this result and the retry is flagged.
                if isinstance(exc, DatabaseUnavailable):
                    log.warning("settle failed, retrying: %s", exc)
                else:
                    log.exception("settle failed, retrying")
            since = self._closing_since
            if since is not None and time.monotonic() - since > self._give_up_after:
                log.error("gave up settling %d results at shutdown; leases will expire", len(items))
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _retry_db(fn: Callable[[], Awaitable[_T]], attempts: int = 20) -> _T:
    """Retry a read while the database is briefly unavailable (leases cover the wait)."""
    delay = 0.05
    for _ in range(attempts - 1):
        try:
            return await fn()
        except DatabaseUnavailable as exc:
            log.warning("read failed, retrying: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    return await fn()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)

"""Writing accepted messages: group commit so concurrent accepts share one fsync.

Each request hands its rows to the committer and waits; a single task writes everything
pending in one transaction and resolves every waiter only after the commit is durable. A
202 therefore always follows a commit, and under load hundreds of accepts share one sync
instead of paying one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError

from service.db.engine import Database, DatabaseUnavailable
from service.db.plain_insert import insert_rows
from service.db.suppressions import suppressed_in
from service.db.tables import messages, recipients
from service.observability import record, tracing
from service.webhooks import outbox

log = logging.getLogger(__name__)
GATHER_STEPS = 4  # loop steps a group commit waits at most while requests keep arriving


Rows = list[tuple[Any, dict[str, Any]]]  # (table, row)


@dataclass(slots=True)
class NewMessage:
    """The rows of one accepted message."""

    message: dict[str, Any]
    recipients: list[dict[str, Any]]
    events: list[dict[str, Any]]
    extra: Rows = field(default_factory=list)
    # Set when the tenant's suppression list is still to be applied: called inside the
    # writing transaction with the suppressed (lower-cased) addresses among the recipients,
    # it updates the rows and returns more rows to insert (e.g. an idempotency row whose
    # stored response tells the outcome). Called again if the transaction is retried.
    finish: Callable[[set[str]], Rows] | None = None


async def insert_messages(db: Database, items: Sequence[NewMessage]) -> None:
    """Insert ``items`` in one transaction (all or nothing)."""
    async with db.write() as conn:
        await _insert(conn, items)


async def _insert(conn: Any, items: Sequence[NewMessage]) -> None:
    finished = await _finish(conn, items)
    await insert_rows(conn, messages, [i.message for i in items])
    await insert_rows(conn, recipients, [r for i in items for r in i.recipients])
    # The webhook outbox rows commit with the events or not at all.
    await outbox.record_events(conn, [e for i in items for e in i.events])
    extra: dict[Any, list[dict[str, Any]]] = {}
    for table, row in [*(r for i in items for r in i.extra), *finished]:
        extra.setdefault(table, []).append(row)
    for table, rows in extra.items():
        await insert_rows(conn, table, rows)


async def _finish(conn: Any, items: Sequence[NewMessage]) -> Rows:
    """Apply suppressions to the items that asked for it: one SELECT for all of them, in
    the transaction that inserts them, so a request costs no read of its own."""
    waiting = [i for i in items if i.finish is not None]
    if not waiting:
        return []
    hit = await suppressed_in(
        conn, ((i.message["tenant_id"], r["email"]) for i in waiting for r in i.recipients)
    )
    out: Rows = []
    for i in waiting:
        tenant = i.message["tenant_id"]
        assert i.finish is not None
        out.extend(i.finish({e for t, e in hit if t == tenant}))
    return out


class GroupCommitter:
    """Batches concurrent ``submit`` calls into shared transactions."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 512,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._pending: list[tuple[NewMessage, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, item: NewMessage) -> None:
        """Return once ``item`` is durably committed; raise if it was not."""
        tracing.stamp(item.message)
        if self._task is None:
            await insert_messages(self._db, [item])
            if self._on_commit:
                self._on_commit()
            record.accepted(item)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        self._wake.set()
        # A client that disconnects cancels only this request's own future: the item stays
        # in the shared write, which goes on (no shield needed, nor its extra future), and
        # is counted and logged there.
        await fut

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather()
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            await self._commit(batch)

    async def _gather(self) -> None:
        """Let requests the loop already holds reach ``submit`` before the batch is cut.

        Each step of the loop that added some is followed by another (a few at most): under
        load that fills the commit with the requests that arrived meanwhile, and every
        commit costs a sync, a lock hand-over and a claim by the worker it wakes. A lone
        request costs one step, microseconds.
        """
        for _ in range(GATHER_STEPS):
            seen = len(self._pending)
            await asyncio.sleep(0)
            if len(self._pending) == seen or len(self._pending) >= self._max_batch:
                return

    async def _commit(self, batch: list[tuple[NewMessage, asyncio.Future[None]]]) -> None:
        try:
            await insert_messages(self._db, [item for item, _ in batch])
        except DatabaseUnavailable as exc:
            for _, fut in batch:
                _resolve(fut, exc)
            return
        except IntegrityError as exc:
            if len(batch) == 1:
                _resolve(batch[0][1], exc)
                return
            # One bad item must not fail its neighbours: commit them one by one.
            for item in batch:
                await self._commit([item])
            return
        except Exception as exc:
            log.exception("accept commit failed")
            for _, fut in batch:
                _resolve(fut, exc)
            return
        for _, fut in batch:
            _resolve(fut, None)
        if self._on_commit:
            self._on_commit()
        # Every committed item, its request still waiting or not; the lines of one commit
        # are written together.
        record.accepted_many([item for item, _ in batch])


def _resolve(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)

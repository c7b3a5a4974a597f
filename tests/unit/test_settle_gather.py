"""The settle batcher waits for results still on their way, and never for ones that are not.

Every settle is a write transaction (SQLite's one write lock, one sync), so results that
finish a few milliseconds apart should share one; a lone result must not wait at all.
The database call is replaced by a recorder (given as the batcher's ``settle``): what is
tested is only which results go together (tests/performance/test_statement_budget.py
counts the real statements).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from typing import Any

import pytest

from service.db import queue
from service.delivery import worker as worker_module
from service.log_output import GatheredStreamHandler
from service.logs import RedactExtras
from service.observability.logging import JsonFormatter
from tests.support.settlements import sent

pytestmark = pytest.mark.asyncio

GATHER = 5.0  # long enough that a test finishing early proves no wait happened


def _settlement(i: int) -> queue.Settlement:
    return sent(f"r{i}", message_id=f"m{i}", tenant_id="tenant", email=f"u{i}@x.test", token="t")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def settle(self, _db: Any, *, items: list[queue.Settlement], now: float) -> list[str]:
        ids = [s.recipient_id for s in items]
        self.calls.append(ids)
        return ids


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def _batcher(recorder: Recorder, outstanding: list[int], full: int = 128) -> Any:
    return worker_module._SettleBatcher(
        None,  # type: ignore[arg-type]  # only the recorder sees it
        time.time,
        gather=GATHER,
        outstanding=lambda: outstanding[0],
        full=full,
        settle=recorder.settle,
    )


async def test_results_finishing_apart_share_one_settle(recorder: Recorder) -> None:
    outstanding = [10]
    batcher = _batcher(recorder, outstanding)
    batcher.start()
    try:
        started = time.monotonic()

        async def job(i: int) -> None:
            await asyncio.sleep(0.002 * i)
            await batcher.submit([_settlement(i)])

        await asyncio.gather(*(job(i) for i in range(10)))
        # The tenth result completed the set: no wait for the gathering time to run out.
        assert time.monotonic() - started < GATHER / 2
        assert recorder.calls == [[f"r{i}" for i in range(10)]]
    finally:
        await batcher.stop()


async def test_a_lone_result_is_written_at_once(recorder: Recorder) -> None:
    batcher = _batcher(recorder, [1])
    batcher.start()
    try:
        started = time.monotonic()
        await batcher.submit([_settlement(0)])
        assert time.monotonic() - started < GATHER / 2
        assert recorder.calls == [["r0"]]
    finally:
        await batcher.stop()


async def test_a_full_batch_does_not_wait_for_the_rest(recorder: Recorder) -> None:
    batcher = _batcher(recorder, [100], full=4)
    batcher.start()
    try:
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit([_settlement(i)]) for i in range(4)))
        assert time.monotonic() - started < GATHER / 2
        assert recorder.calls == [["r0", "r1", "r2", "r3"]]
    finally:
        await batcher.stop()


async def test_results_that_never_come_delay_a_settle_only_by_the_gathering_time(
    recorder: Recorder,
) -> None:
    batcher = worker_module._SettleBatcher(
        None,  # type: ignore[arg-type]
        time.time,
        gather=0.05,
        outstanding=lambda: 5,  # three of them never report (say, their sessions hang)
        settle=recorder.settle,
    )
    batcher.start()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(batcher.submit([_settlement(i)]) for i in range(2))), timeout=10
        )
        assert recorder.calls == [["r0", "r1"]]
    finally:
        await batcher.stop()


async def test_stopping_writes_what_is_waiting_without_gathering(recorder: Recorder) -> None:
    batcher = _batcher(recorder, [50])
    batcher.start()
    waiting = asyncio.ensure_future(batcher.submit([_settlement(0)]))
    await asyncio.sleep(0.01)
    assert recorder.calls == []  # still gathering: 49 more are outstanding
    started = time.monotonic()
    await batcher.stop()
    await waiting
    assert time.monotonic() - started < GATHER / 2
    assert recorder.calls == [["r0"]]


async def test_a_cancelled_submitter_still_gets_its_results_written(recorder: Recorder) -> None:
    batcher = _batcher(recorder, [2])
    batcher.start()
    first = asyncio.ensure_future(batcher.submit([_settlement(0)]))
    await asyncio.sleep(0.01)
    first.cancel()  # its job was cut off while the settle gathered
    second = asyncio.ensure_future(batcher.submit([_settlement(1)]))
    await second
    await batcher.stop()
    assert first.cancelled()
    assert recorder.calls == [["r0", "r1"]]


async def test_only_written_results_are_logged(recorder: Recorder) -> None:
    out = io.StringIO()
    handler = GatheredStreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactExtras())
    attempts = logging.getLogger("kirim.delivery")
    saved = (attempts.handlers, attempts.propagate, attempts.level)
    attempts.handlers, attempts.propagate = [handler], False
    attempts.setLevel(logging.INFO)

    async def settle_all_but_r1(
        _db: Any, *, items: list[queue.Settlement], now: float
    ) -> list[str]:
        return [s.recipient_id for s in items if s.recipient_id != "r1"]  # r1's lease was lost

    batcher = worker_module._SettleBatcher(
        None,  # type: ignore[arg-type]
        time.time,
        gather=GATHER,
        outstanding=lambda: 3,
        settle=settle_all_but_r1,
    )
    try:
        batcher.start()
        await asyncio.gather(*(batcher.submit([_settlement(i)]) for i in range(3)))
        await batcher.stop()
        handler.flush()
    finally:
        attempts.handlers, attempts.propagate = saved[0], saved[1]
        attempts.setLevel(saved[2])
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["recipient_id"] for d in lines] == ["r0", "r2"]  # not the dropped result
    assert {d["msg"] for d in lines} == {"attempt sent"}

"""``run_together`` behaves as ``asyncio.gather`` does for jobs that return nothing."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from service.delivery.together import run_together


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_waits_for_every_job() -> None:
    done: list[int] = []

    async def job(i: int) -> None:
        await asyncio.sleep(0.001 * (5 - i))
        done.append(i)

    await run_together([job(i) for i in range(5)])
    assert sorted(done) == [0, 1, 2, 3, 4]
    await run_together([])


async def _gather(jobs: list[Coroutine[Any, Any, None]]) -> None:
    await asyncio.gather(*jobs)


# ``asyncio.gather`` runs the same case as the reference.
@pytest.mark.parametrize("runner", [run_together, _gather], ids=["run_together", "gather"])
async def test_the_first_failure_ends_the_wait_and_the_others_run_on(
    runner: Callable[[list[Coroutine[Any, Any, None]]], Awaitable[None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = asyncio.Event()
    finished: list[str] = []

    async def fails_now() -> None:
        raise ValueError("first")

    async def fails_later() -> None:
        await gate.wait()
        finished.append("later")
        raise KeyError("second")

    async def succeeds() -> None:
        await gate.wait()
        finished.append("ok")

    with pytest.raises(ValueError, match="first"):
        await runner([succeeds(), fails_now(), fails_later()])
    assert finished == []
    gate.set()
    await _settle()
    assert sorted(finished) == ["later", "ok"]
    gc.collect()
    await _settle()
    assert "exception was never retrieved" not in caplog.text


async def test_cancelling_the_waiter_cancels_every_job_and_waits_for_them() -> None:
    cleaned: list[int] = []

    async def job(i: int) -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0)  # clean-up that takes a step
            cleaned.append(i)

    waiter = asyncio.create_task(run_together([job(i) for i in range(3)]))
    await _settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert sorted(cleaned) == [0, 1, 2]  # all cleaned up before the waiter ended


async def test_a_job_cancelled_by_another_hand_ends_the_wait_as_cancelled() -> None:
    gate = asyncio.Event()
    finished: list[str] = []
    started: list[asyncio.Task[object]] = []

    async def victim() -> None:
        started.append(asyncio.current_task())  # type: ignore[arg-type]
        await asyncio.sleep(10)

    async def other() -> None:
        await gate.wait()
        finished.append("other")

    waiter = asyncio.create_task(run_together([victim(), other()]))
    await _settle()
    started[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert waiter.cancelled()
    gate.set()
    await _settle()
    assert finished == ["other"]  # the other job was not cancelled

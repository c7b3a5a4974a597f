"""``asyncio.gather`` for jobs that return nothing, in fewer instructions per job.

A worker runs every message of a claim as its own task. ``gather`` wraps each coroutine
through ``ensure_future`` and collects results in an interpreted callback: several Python
calls per message. ``run_together`` creates the tasks directly and counts them down in a
compiled callback, with ``gather``'s behaviour otherwise: the first job to fail (or to be
cancelled by someone else) ends the wait with its exception while the others run on; if
the waiting task is cancelled, every job is cancelled and waited for before the
cancellation goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any


class _Countdown:
    __slots__ = ("future", "left")

    def __init__(self, future: asyncio.Future[None], left: int) -> None:
        self.future = future
        self.left = left

    def done(self, task: asyncio.Task[Any]) -> None:
        self.left -= 1
        if self.future.done():
            if not task.cancelled():
                task.exception()  # retrieved: a later failure is not reported as unseen
            return
        if task.cancelled():
            self.future.set_exception(asyncio.CancelledError())
            return
        failure = task.exception()
        if failure is not None:
            self.future.set_exception(failure)
        elif self.left == 0:
            self.future.set_result(None)


async def run_together(jobs: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run ``jobs`` concurrently, each as a task, until all are done (see the module)."""
    if not jobs:
        return
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(job) for job in jobs]
    countdown = _Countdown(loop.create_future(), len(tasks))
    for task in tasks:
        task.add_done_callback(countdown.done)
    try:
        await countdown.future
    except asyncio.CancelledError:
        if countdown.future.cancelled():  # this task was cancelled, not a job
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        raise

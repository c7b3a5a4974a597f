"""A group commit takes in the requests the event loop is still handing over.

Under load, requests reach ``submit`` over a few steps of the loop; cutting the batch at
the first one would commit a few now and the rest right after, each commit paying its own
sync. The database call is replaced by a recorder: only the batching is tested here (the
statement budget test runs the real thing on both databases).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.db import accepts
from service.db.accepts import GATHER_STEPS, GroupCommitter, NewMessage

pytestmark = pytest.mark.asyncio


def _item(i: int) -> NewMessage:
    return NewMessage(message={"id": f"m{i}"}, recipients=[], events=[])


RECORDED: list[list[str]] = []  # what the committer counted and logged, per call


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []
    RECORDED.clear()

    async def insert_messages(_db: Any, items: list[NewMessage]) -> None:
        seen.append([i.message["id"] for i in items])

    monkeypatch.setattr(accepts, "insert_messages", insert_messages)
    monkeypatch.setattr(accepts.tracing, "stamp", lambda _m: None)
    monkeypatch.setattr(accepts.record, "accepted", lambda _i: None)
    monkeypatch.setattr(
        accepts.record,
        "accepted_many",
        lambda items: RECORDED.append([i.message["id"] for i in items]),
    )
    return seen


async def _submit_after(committer: GroupCommitter, i: int, steps: int) -> None:
    for _ in range(steps):
        await asyncio.sleep(0)  # a request still being parsed and validated
    await committer.submit(_item(i))


async def test_requests_arriving_over_a_few_steps_share_one_commit(
    commits: list[list[str]],
) -> None:
    committer = GroupCommitter(None)  # type: ignore[arg-type]  # only the recorder sees it
    committer.start()
    try:
        await asyncio.gather(*(_submit_after(committer, i, steps=i) for i in range(GATHER_STEPS)))
    finally:
        await committer.stop()
    assert commits == [[f"m{i}" for i in range(GATHER_STEPS)]]


async def test_the_gathering_is_bounded(commits: list[list[str]]) -> None:
    committer = GroupCommitter(None)  # type: ignore[arg-type]
    committer.start()
    n = 3 * GATHER_STEPS
    try:
        await asyncio.gather(*(_submit_after(committer, i, steps=i) for i in range(n)))
    finally:
        await committer.stop()
    assert len(commits) > 1  # a steady stream does not hold the first commit back forever
    assert [i for c in commits for i in c] == [f"m{i}" for i in range(n)]


async def test_a_full_batch_is_committed_without_waiting(commits: list[list[str]]) -> None:
    committer = GroupCommitter(None, max_batch=2)  # type: ignore[arg-type]
    committer.start()
    try:
        await asyncio.gather(*(_submit_after(committer, i, steps=0) for i in range(4)))
    finally:
        await committer.stop()
    assert commits == [["m0", "m1"], ["m2", "m3"]]


async def test_a_request_cancelled_while_waiting_is_committed_all_the_same(
    commits: list[list[str]],
) -> None:
    committer = GroupCommitter(None)  # type: ignore[arg-type]
    committer.start()
    try:
        gone = asyncio.ensure_future(committer.submit(_item(0)))
        stays = asyncio.ensure_future(committer.submit(_item(1)))
        await asyncio.sleep(0)  # both are waiting for the commit
        gone.cancel()  # the client hung up
        await stays
    finally:
        await committer.stop()
    assert gone.cancelled()
    assert commits == [["m0", "m1"]]
    assert RECORDED == [["m0", "m1"]]  # the hung-up request's message is counted too

"""Plain executemany INSERTs store exactly what Core's ``table.insert()`` stores."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.db.engine import Database
from service.db.plain_insert import insert_rows
from service.db.tables import idempotency_keys, messages

pytestmark = pytest.mark.asyncio


def _message(i: int, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"msg_{i}",
        "tenant_id": "t",
        "created_at": time.time(),
        "sender": "a@example.com",
        "subject": "Grüße",
        "message_id_header": f"<{i}@x>",
        "mime": b"\x00\xffbytes",
        "size": 7,
        "smtputf8": True,
        "tags": ["a", "ü"],
        "metadata": {"k": "v", "n": "1"},
        "send_at": None,
        "expires_at": 5,  # an int in a float column
    }
    row.update(kw)
    return row


async def _stored(db: Database) -> dict[str, dict[str, Any]]:
    async with db.read() as conn:
        rows = (await conn.execute(select(messages))).all()
    return {r.id: dict(r._mapping) for r in rows}


async def test_same_rows_as_core(database_url: str) -> None:
    db = Database(database_url)
    try:
        plain = [_message(1), _message(2, smtputf8=False, tags=[], mime=None)]
        core = [_message(3), _message(4, smtputf8=False, tags=[], mime=None)]
        async with db.write() as conn:
            await insert_rows(conn, messages, plain)
            await conn.execute(messages.insert(), core)
            # Rows of different shapes take the Core path.
            await insert_rows(conn, messages, [_message(5), {**_message(6), "traceparent": "x"}])
        stored = await _stored(db)
    finally:
        await db.dispose()
    for a, b in (("msg_1", "msg_3"), ("msg_2", "msg_4"), ("msg_5", "msg_3")):
        left = {k: v for k, v in stored[a].items() if k not in ("id", "message_id_header")}
        right = {k: v for k, v in stored[b].items() if k not in ("id", "message_id_header")}
        left.pop("created_at"), right.pop("created_at")
        assert left == right, (a, b)
    first = stored["msg_1"]
    assert first["tags"] == ["a", "ü"] and first["metadata"] == {"k": "v", "n": "1"}
    assert first["mime"] == b"\x00\xffbytes" and first["smtputf8"] is True
    assert first["expires_at"] == 5.0 and isinstance(first["expires_at"], float)
    # Defaults of columns the rows leave out are filled in, as Core does.
    assert first["priority"] == 1 and first["event_seq"] == 0
    # (Core compiles an executemany from the first row: the second row's extra key is
    # dropped there, as it always was.)
    assert stored["msg_6"]["subject"] == "Grüße"


async def test_unique_violations_raise_integrity_error(database_url: str) -> None:
    db = Database(database_url)
    row = {
        "tenant_id": "t",
        "key": "k",
        "fingerprint": "f",
        "status": "done",
        "response_status": 202,
        "response_body": "{}",
        "created_at": 1.0,
        "expires_at": 2.0,
    }
    try:
        async with db.write() as conn:
            await insert_rows(conn, idempotency_keys, [row])
        with pytest.raises(IntegrityError):
            async with db.write() as conn:
                await insert_rows(conn, idempotency_keys, [row])
    finally:
        await db.dispose()

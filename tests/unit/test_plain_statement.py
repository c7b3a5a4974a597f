"""Plain statements give exactly what Core gives for the same statement and parameters."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Numeric, bindparam, func, literal_column, select, update
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2

from service.db.engine import Database
from service.db.plain_insert import insert_rows
from service.db.plain_statement import PlainStatement, _build
from service.db.tables import messages, recipients

R = recipients
_SET = update(R).where(R.c.id == bindparam("b_id"))
_UPDATE = PlainStatement(
    _SET.values(
        status=bindparam("b_status"),
        next_attempt_at=func.coalesce(bindparam("b_next", type_=R.c.next_attempt_at.type), 7),
        possible_duplicate=R.c.possible_duplicate
        | bindparam("b_dup", type_=R.c.possible_duplicate.type),
        lease_owner=None,
        lease_lost=False,
        last_code=bindparam("b_code"),
        last_reply=bindparam("b_reply"),
        updated_at=bindparam("b_now"),
    )
)
_RETURNING = PlainStatement(
    _SET.values(attempts=R.c.attempts + bindparam("b_more", type_=R.c.attempts.type)).returning(
        R.c.id, R.c.attempts, R.c.deadline, R.c.lease_lost, R.c.possible_duplicate, R.c.email
    )
)
_BODIES = PlainStatement(
    select(
        messages.c.id,
        messages.c.mime,
        messages.c.smtputf8,
        messages.c.tags,
        messages.c.metadata,
        messages.c.traceparent,
        messages.c.expires_at,
        messages.c.priority,
    )
    .where(messages.c.id.in_(bindparam("b_ids", expanding=True)), messages.c.size > 0)
    .order_by(messages.c.id)
)


def _message(i: int) -> dict[str, Any]:
    return {
        "id": f"msg_{i}",
        "tenant_id": "t",
        "created_at": 1.5,
        "sender": "a@example.com",
        "subject": "Grüße",
        "message_id_header": f"<{i}@x>",
        "mime": b"\x00\xff" * i if i % 3 else None,
        "size": 7,
        "smtputf8": bool(i % 2),
        "tags": ["a", "ü"][: i % 3],
        "metadata": {"k": "v", "n": str(i)},
        "send_at": None,
        "expires_at": 5 if i % 2 else None,  # an int in a float column
        "traceparent": None if i % 2 else f"00-{i}",
    }


def _recipient(i: int) -> dict[str, Any]:
    return {
        "id": f"rcp_{i}",
        "message_id": "msg_1",
        "tenant_id": "t",
        "email": f"u{i}@example.com",
        "kind": "to",
        "status": "sending",
        "attempts": i,
        "created_at": 1.0,
        "updated_at": 1.0,
        "next_attempt_at": 2.0,
        "deadline": 9,
        "lease_owner": "w",
        "lease_lost": bool(i % 2),
        "possible_duplicate": i % 4 == 0,
    }


def _changes(i: int) -> dict[str, Any]:
    return {
        "b_status": ["sent", "deferred", "bounced"][i % 3],
        "b_next": None if i % 2 else 100 + i,
        "b_dup": i % 3 == 0,
        "b_code": None if i % 5 == 0 else 250,
        "b_reply": "ok ü",
        "b_now": time.time(),
        "b_more": i,
    }


async def test_same_rows_and_writes_as_core(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.write() as conn:
            await insert_rows(conn, messages, [_message(i) for i in range(1, 8)])
            await insert_rows(conn, recipients, [_recipient(i) for i in range(40)])
        plain_ids, core_ids = range(0, 20), range(20, 40)
        async with db.write() as conn:
            await _UPDATE.executemany(
                conn, [{"b_id": f"rcp_{i}", **_changes(i)} for i in plain_ids]
            )
            await conn.execute(
                _UPDATE.stmt, [{"b_id": f"rcp_{i}", **_changes(i - 20)} for i in core_ids]
            )
            returned = [
                await _RETURNING.rows(conn, {"b_id": f"rcp_{i}", "b_more": 2}) for i in plain_ids
            ]
            expected = [
                [
                    tuple(r)
                    for r in await conn.execute(_RETURNING.stmt, {"b_id": f"rcp_{i}", "b_more": 2})
                ]
                for i in core_ids
            ]
        async with db.read() as conn:
            stored = {r.id: r._mapping for r in await conn.execute(select(recipients))}
            for n in (1, 2, 3, 5, 7):  # IN lists padded to 1, 2, 4 and 8 entries
                wanted = {"b_ids": [f"msg_{i}" for i in range(1, n + 1)]}
                got = await _BODIES.rows(conn, wanted)
                core = [tuple(r) for r in await conn.execute(_BODIES.stmt, wanted)]
                assert got == core and len(got) == n
                assert [type(v) for v in got[0]] == [type(v) for v in core[0]]
    finally:
        await db.dispose()
    for plain in (_UPDATE, _RETURNING, _BODIES):  # none fell back to Core
        assert plain._plans and None not in plain._plans.values()
    for i in plain_ids:
        mine, theirs = dict(stored[f"rcp_{i}"]), dict(stored[f"rcp_{i + 20}"])
        for row in (mine, theirs):
            for key in ("id", "email", "attempts", "updated_at", "possible_duplicate"):
                row.pop(key)
        assert mine == theirs, i
    # possible_duplicate ORs the old value with the new one, on both paths.
    assert stored["rcp_4"].possible_duplicate and stored["rcp_3"].possible_duplicate
    assert not stored["rcp_1"].possible_duplicate
    for got, want in zip(returned, expected, strict=True):
        assert len(got) == len(want) == 1
        assert got[0][1] == want[0][1] - 20 and got[0][2:5] == want[0][2:5]
        assert [type(v) for v in got[0]] == [type(v) for v in want[0]]
    assert returned[3][0] == ("rcp_3", 5, 9.0, False, True, "u3@example.com")


def test_other_drivers_and_types_take_core() -> None:
    stmt = select(messages.c.id).where(messages.c.id == bindparam("b_id"))
    pyformat = PGDialect_psycopg2()
    assert _build(stmt, pyformat, stmt.compile(dialect=pyformat), {}) is None
    asyncpg = PGDialect_asyncpg()
    decimal = select(literal_column("1.5", Numeric()))
    assert _build(decimal, asyncpg, decimal.compile(dialect=asyncpg), {}) is None
    assert _build(stmt, asyncpg, stmt.compile(dialect=asyncpg), {}) is not None


def _outcome(convert: Any, value: Any) -> tuple[str, Any]:
    try:
        return "value", convert(value)
    except Exception as exc:  # the same error, with the same words
        return type(exc).__name__, str(exc)


def test_compiled_converters_do_what_cores_do(tmp_path: Path) -> None:
    dialect = Database(f"sqlite:///{tmp_path}/kirim.db").writer.sync_engine.dialect
    flag = R.c.possible_duplicate.type
    core_bind = flag._cached_bind_processor(dialect)
    plan = _build(_UPDATE.stmt, dialect, _UPDATE.stmt.compile(dialect=dialect), {})
    assert plan is not None
    ours_bind = next(c for k, _, c, _ in plan.slots if k == "b_dup")
    assert ours_bind is not core_bind and ours_bind is not None
    for value in (None, True, False, 0, 1, 1.0, 2, -1, "yes", b"1", [True]):
        assert _outcome(ours_bind, value) == _outcome(core_bind, value), value

    tags = messages.c.tags.type
    core_json = tags._cached_result_processor(dialect, None)
    plan = _build(_BODIES.stmt, dialect, _BODIES.stmt.compile(dialect=dialect), {"b_ids": 1})
    assert plan is not None and plan.results is not None
    ours_json = plan.results[3]
    assert ours_json is not core_json and ours_json is not None
    for value in ('["a", "b"]', '{"k": {"n": 1}}', "null", '"x"', "7", b"[1]", 3, 2.5, "{", [1]):
        assert _outcome(ours_json, value) == _outcome(core_json, value), value

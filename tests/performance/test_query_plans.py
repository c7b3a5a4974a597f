"""The queue's probes and claims use their indexes on SQLite, whatever the backlog's size,
and writing a row costs no more than its indexes.

SQLite uses a partial index only when the query repeats the index's condition with
literals; with bound parameters the same query reads the whole table (493 ms per idle wait
with 1,100,000 recipients). A plan is a property of the query, not of timing.
"""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from service.db import event_seq, queue, status_sets, tables
from service.domain.status import CLAIMABLE


def _plan(url: str, stmt: object) -> list[str]:
    sql = str(stmt.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[attr-defined]
    conn = sqlite3.connect(url.split("///", 1)[1])
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    finally:
        conn.close()


@pytest.mark.parametrize("name", ["_NEXT_DUE", "_FIRST_DUE_HIGH"])
def test_queue_probes_seek_the_due_index(sqlite_url: str, name: str) -> None:
    plan = _plan(sqlite_url, getattr(queue, name))
    on_recipients = [step for step in plan if " recipients" in step]
    assert on_recipients, plan
    assert all("USING INDEX ix_recipients_due" in step for step in on_recipients), plan


def test_a_message_s_last_event_number_is_one_index_seek(sqlite_url: str) -> None:
    """Settles read the numbering from the events; a scan there would grow with history."""
    stmt = event_seq._LAST_SEQS[True].stmt.params(b_ids=["msg_a", "msg_b"])
    plan = _plan(sqlite_url, stmt)
    on_events = [step for step in plan if " events" in step]
    assert on_events, plan
    assert all("COVERING INDEX ix_events_message_seq" in step for step in on_events), plan
    assert any("messages USING INDEX" in step for step in plan), plan


def test_claims_seek_the_tenant_due_index(sqlite_url: str) -> None:
    pairs = queue._DUE_PAIRS.stmt.params(b_now=1.0)
    # An UPDATE takes no params(): the plan of the SQL the worker runs, parameters NULL.
    take = queue._take(2, True)._plan(sqlite.dialect(), {})
    assert take is not None
    with sqlite3.connect(sqlite_url.split("///", 1)[1]) as conn:
        query = conn.execute("EXPLAIN QUERY PLAN " + take.sql, [None] * len(take.slots))
        take_plan = [row[3] for row in query]
    for plan in (_plan(sqlite_url, pairs), take_plan):
        on_recipients = [step for step in plan if " recipients" in step and "(id=?)" not in step]
        assert on_recipients, plan
        assert all("INDEX ix_recipients_" in step and "_due" in step for step in on_recipients)


def test_finished_webhook_deliveries_are_found_through_their_index(sqlite_url: str) -> None:
    wd = tables.webhook_deliveries
    stmt = (
        select(wd.c.id)
        .where(status_sets.one_of(wd.c.status, status_sets.HOOK_FINISHED), wd.c.updated_at < 5)
        .order_by(wd.c.updated_at)
        .limit(10)
    )
    assert any("ix_webhook_deliveries_finished" in step for step in _plan(sqlite_url, stmt))


def _opcodes(url: str, sql: str) -> list[str]:
    conn = sqlite3.connect(url.split("///", 1)[1])
    try:
        return [row[1] for row in conn.execute("EXPLAIN " + sql)]
    finally:
        conn.close()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE recipients SET status = 'sent' WHERE id = 'r'",
        "INSERT INTO recipients (id, message_id, tenant_id, email, kind, status, priority,"
        " attempts, created_at, updated_at, next_attempt_at, deadline, lease_lost,"
        " possible_duplicate) VALUES ('r', 'm', 't', 'e', 'to', 'queued', 1, 0, 0, 0, 0, 0, 0, 0)",
        "UPDATE webhook_deliveries SET status = 'succeeded' WHERE id = 'd'",
    ],
)
def test_writing_a_row_builds_no_temporary_b_tree(sqlite_url: str, sql: str) -> None:
    """Each partial index checks its condition on every row written; ``status IN (three
    constants)`` would build a temporary B-tree each time (a third of a settle's cost)."""
    assert "OpenEphemeral" not in _opcodes(sqlite_url, sql)


def test_the_claimable_statuses_are_the_domain_s() -> None:
    assert set(status_sets.CLAIMABLE) == {s.value for s in CLAIMABLE}

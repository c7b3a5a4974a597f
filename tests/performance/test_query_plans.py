"""The idle worker's queue probes use their index on SQLite, whatever the backlog's size.

SQLite uses a partial index only when the query repeats the index's condition with
literals; with bound parameters the same query reads the whole table (493 ms per idle wait
with 1,100,000 recipients). A plan is a property of the query, not of timing.
"""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.dialects import sqlite

from service.db import event_seq, queue


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

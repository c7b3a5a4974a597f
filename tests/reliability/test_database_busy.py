"""A3 and C5 on SQLite: a lock held past the busy timeout by another connection.

Accepts answer 503 with Retry-After (never 202 without a commit, never 500); a worker whose
settle meets the lock retries it while its lease holds, and the recipient is sent once.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.reliability.harness import serve, wait_until
from tests.reliability.invariants import check_db, snapshot
from tests.support.smtp_script import Script, ScriptedSmtpServer, Stall

pytestmark = pytest.mark.slow

BODY = {"from": "app@example.com", "subject": "s", "text": "t"}


@contextmanager
def locked(sqlite_url: str) -> Iterator[None]:
    """Hold the SQLite write lock from a separate connection."""
    conn = sqlite3.connect(sqlite_url[len("sqlite:///") :], isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_a3_accept_answers_503_while_the_database_is_locked(
    sqlite_url: str, smtp: ScriptedSmtpServer, tmp_path: Path
) -> None:
    with serve(sqlite_url, smtp.url(), tmp_path, database_busy_timeout_ms=300) as (_, api):
        seen: Counter[int] = Counter()
        with locked(sqlite_url):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not seen[503]:
                r = api.http.post("/v1/messages", json={**BODY, "to": ["a3-x@example.com"]})
                seen[r.status_code] += 1
                if r.status_code == 503:
                    assert r.headers["Retry-After"].isdigit()
                    assert r.headers["content-type"].startswith("application/problem+json")
            assert set(seen) == {503}, seen  # never a 202 that was not committed, never 500
        mid = api.send(["a3@example.com"])["id"]
        api.wait_all(mid, "sent")
    snap = check_db(sqlite_url, smtp.messages)
    assert [r["email"] for r in snap.recipients] == ["a3@example.com"]  # nothing half-stored


def test_c5_settle_retries_through_a_locked_database(
    sqlite_url: str, smtp: ScriptedSmtpServer, tmp_path: Path
) -> None:
    smtp.script = Script(dot=Stall(0.5, "250 2.0.0 Ok"))
    with serve(sqlite_url, smtp.url(), tmp_path, database_busy_timeout_ms=200, lease_seconds=8) as (
        _,
        api,
    ):
        mid = api.send(["c5@example.com"])["id"]
        wait_until(lambda: any(c.saw("DATA") for c in smtp.connections), what="at the dot")
        with locked(sqlite_url):
            # The upstream says 250 while the lock is held; the settle must wait it out.
            wait_until(lambda: len(smtp.messages) == 1, what="upstream accepted")
            time.sleep(2.0)
        msg = api.wait_all(mid, "sent")
    assert [a["outcome"] for a in msg["attempts"]] == ["accepted"]
    assert msg["recipients"][0]["possible_duplicate"] is False
    assert "settle failed" in (tmp_path / "serve.log").read_text()
    check_db(sqlite_url, smtp.messages)
    assert snapshot(sqlite_url).statuses() == Counter({"sent": 1})

"""Group C: several worker processes, kill -9 and graceful stops (test plan C1-C3)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.reliability.harness import no_tracebacks, serve, wait_until, worker
from tests.reliability.invariants import check_db, snapshot
from tests.reliability.seed import seed
from tests.support.smtp_script import Connection, Script, ScriptedSmtpServer, Stall

pytestmark = pytest.mark.slow


def _count(database_url: str, status: str) -> int:
    return snapshot(database_url).statuses()[status]


def _stalled(conn: Connection) -> bool:
    """The server got a final dot on ``conn`` and is holding its reply (a ``Stall``)."""
    return any(who == "*" and text.startswith("stall") for who, text in conn.lines)


@pytest.mark.parametrize("workers", [2, 4])
def test_c1_workers_share_one_sqlite_queue_without_duplicates(
    sqlite_url: str, smtp: ScriptedSmtpServer, tmp_path: Path, workers: int
) -> None:
    emails = [f"c1-{i:04d}@example.com" for i in range(2000)]
    seed(sqlite_url, emails)
    procs = [
        worker(sqlite_url, smtp.url(), tmp_path / f"worker{n}.log", worker_batch_size=64)
        for n in range(workers)
    ]
    try:
        wait_until(lambda: len(smtp.messages) >= 2000, timeout=120, what="2000 deliveries")
        wait_until(lambda: _count(sqlite_url, "sent") == 2000, timeout=30, what="all settled")
    finally:
        for p in procs:
            p.stop()
    counts = smtp.counts
    assert sum(counts.values()) == 2000 and set(counts) == set(emails)
    assert max(counts.values()) == 1, "zero duplicates"
    check_db(sqlite_url, smtp.messages)
    no_tracebacks(tmp_path)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_c1_two_workers_on_postgresql(
    database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path
) -> None:
    emails = [f"c1pg-{i:04d}@example.com" for i in range(1000)]
    seed(database_url, emails)
    procs = [
        worker(database_url, smtp.url(), tmp_path / f"worker{n}.log", worker_batch_size=64)
        for n in range(2)
    ]
    try:
        wait_until(lambda: _count(database_url, "sent") == 1000, timeout=120, what="all sent")
    finally:
        for p in procs:
            p.stop()
    assert max(smtp.counts.values()) == 1 and len(smtp.counts) == 1000
    check_db(database_url, smtp.messages)


def test_c2_kill9_worker_mid_batch_then_restart(
    database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path
) -> None:
    """20 of 50 are delivered and settled, the rest hang at RCPT when the worker dies."""
    served = itertools.count(1)

    def rcpt(_r: str) -> str | Stall:
        return "250 2.1.5 Ok" if next(served) <= 20 else Stall(30.0)

    smtp.script = Script(rcpt=rcpt)
    emails = [f"c2-{i:02d}@example.com" for i in range(50)]
    seed(database_url, emails)
    first = worker(database_url, smtp.url(), tmp_path / "worker1.log", worker_batch_size=50)
    try:
        wait_until(lambda: _count(database_url, "sent") == 20, what="20 settled")
        wait_until(lambda: _count(database_url, "sending") == 30, what="30 still leased")
        first.kill9()
    finally:
        first.kill9()
    delivered_before = {r for m in smtp.messages for r in m.recipients}
    assert len(delivered_before) == 20
    smtp.script = Script()
    second = worker(database_url, smtp.url(), tmp_path / "worker2.log")
    try:
        wait_until(lambda: _count(database_url, "sent") == 50, timeout=30, what="all 50 sent")
    finally:
        second.stop()
    counts = smtp.counts
    assert all(counts[e] == 1 for e in emails), "nothing settled is sent again, nothing lost"
    snap = check_db(database_url, smtp.messages)
    for email in delivered_before:
        assert len(snap.attempts_of(email)) == 1
    no_tracebacks(tmp_path)


def test_c3_kill9_between_upstream_250_and_settle(
    database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path
) -> None:
    (mid,) = seed(database_url, ["c3@example.com"])
    crashing = worker(
        database_url,
        smtp.url(),
        tmp_path / "crash.log",
        fault_injection="after_smtp_before_settle",
    )
    assert crashing.proc is not None
    crashing.proc.wait(30)  # it kills itself right after the upstream's 250
    assert crashing.proc.returncode == -9
    assert smtp.count("c3@example.com") == 1
    assert _count(database_url, "sending") == 1  # the settle never happened

    again = worker(database_url, smtp.url(), tmp_path / "worker.log")
    try:
        wait_until(lambda: _count(database_url, "sent") == 1, timeout=30, what="re-sent")
    finally:
        again.stop()
    assert smtp.count("c3@example.com") == 2, "exactly one duplicate"
    snap = check_db(database_url, smtp.messages, allow_duplicates={"c3@example.com"})
    (attempt,) = snap.attempts_of("c3@example.com")
    assert attempt["possible_duplicate"] and attempt["outcome"] == "accepted"
    assert snap.recipient("c3@example.com")["possible_duplicate"]
    assert snap.messages[mid]["message_id_header"] == smtp.messages[0].message_id


@pytest.mark.parametrize("cut_off", [False, True])
def test_sigterm_serve_finishes_inflight_and_releases_the_rest(
    database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path, cut_off: bool
) -> None:
    """`kirim serve` on SIGTERM: in-flight sessions finish within the grace, unstarted
    claims go back to the queue, and no row is left `sending`.

    The first two messages stall at the dot. Their sessions were handed on when their
    bodies went out (PIPELINING), so two more transactions are in flight behind them,
    waiting for their MAIL replies: four in flight, six never started.
    """
    stall = 8.0 if cut_off else 1.5
    dots = itertools.count()
    smtp.script = Script(
        dot=lambda _: Stall(stall, "250 2.0.0 Ok") if next(dots) < 2 else "250 2.0.0 Ok"
    )
    emails = [f"term-{i:02d}@example.com" for i in range(10)]
    with serve(database_url, smtp.url(), tmp_path, smtp_pool_size=2, shutdown_grace=3) as (
        proc,
        api,
    ):
        ids = [api.send([e])["id"] for e in emails]
        wait_until(lambda: smtp.active_connections == 2, what="two sessions in flight")
        # Both dots received: the commands that followed each left in the same write, so
        # the two messages behind them are in flight before the SIGTERM.
        wait_until(lambda: sum(map(_stalled, smtp.connections)) == 2, what="at the dot")
        assert proc.proc is not None
        proc.stop(timeout=20)
        # uvicorn re-raises SIGTERM after its graceful shutdown; a timeout would be -9.
        assert proc.proc.returncode in (0, -15)
    snap = snapshot(database_url)
    statuses = snap.statuses()
    assert statuses["sending"] == 0, statuses
    if cut_off:
        assert statuses["sent"] == 0 and statuses["deferred"] == 4, statuses
    else:
        assert statuses["sent"] == 4 and statuses["queued"] == 6, statuses
    check_db(database_url, smtp.messages, all_terminal=False)

    smtp.script = Script()
    with serve(database_url, smtp.url(), tmp_path) as (_, api):
        for mid in ids:
            api.wait_all(mid, "sent")
    cut = {r for m in smtp.messages[:2] for r in m.recipients} if cut_off else set()
    check_db(database_url, smtp.messages, allow_duplicates=cut)
    assert sum(smtp.counts.values()) == 10 + len(cut)
    no_tracebacks(tmp_path)

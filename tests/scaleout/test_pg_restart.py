"""PostgreSQL restarted in the middle of a load: no 202 without a commit, nothing lost."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from service.db.migrate import upgrade
from tests.scaleout.cluster import SmtpSink, post_load, recipient_rows, wait_until
from tests.scaleout.private_pg import PrivatePostgres
from tests.support.process import KirimProcess, kirim_cli, kirim_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_postgres_restart_mid_load(tmp_path: Path) -> None:
    n = 1500
    names = [f"r{i}@example.com" for i in range(n)]
    with PrivatePostgres() as pg, SmtpSink() as sink:
        upgrade(pg.url)
        env = kirim_env(
            database_url=pg.url,
            smtp_url=sink.url,
            worker_poll_interval=0.5,
            database_connect_timeout_ms=2000,
            log_level="WARNING",
        )
        key = kirim_cli(env, "keys", "create", "--name", "restart").strip()
        apis = [
            KirimProcess(env, "serve", "--no-workers", log=tmp_path / f"api{i}.log")
            for i in range(2)
        ]
        workers = [KirimProcess(env, "worker", log=tmp_path / f"w{i}.log") for i in range(2)]
        try:
            for p in apis + workers:
                p.start(wait=False)
            for p in apis:
                p.wait_ready(timeout=120)
            restarted = threading.Event()

            def restarter() -> None:
                deadline = time.monotonic() + 120
                while sink.total() < n // 5 and time.monotonic() < deadline:
                    time.sleep(0.01)
                pg.restart()
                restarted.set()

            t = threading.Thread(target=restarter, daemon=True)
            t.start()
            posted = asyncio.run(post_load([a.base_url for a in apis], key, names, retries=20))
            t.join(150)
            assert restarted.is_set()

            def all_sent() -> bool:
                rows = asyncio.run(recipient_rows(pg.url))
                return all(r.status == "sent" for r in rows)

            wait_until(all_sent, timeout=300, what="every stored recipient sent", step=0.5)
            rows = asyncio.run(recipient_rows(pg.url))
        finally:
            for p in workers + apis:
                p.stop()
        print(f"\nPostgreSQL restart mid-load: failed tries seen by clients {dict(posted.refused)}")
        stored = {r.message_id for r in rows}
        # No 202 without a commit: every id a client was given exists.
        assert set(posted.accepted.values()) <= stored
        # Everything accepted (and everything stored) was delivered, once unless flagged.
        counts = sink.counts()
        assert all(counts[r.email] >= 1 for r in rows)
        assert set(posted.accepted) <= set(counts)
        flagged = {r.email for r in rows if r.possible_duplicate}
        assert {e for e, c in counts.items() if c > 1} <= flagged
        assert set(counts) <= {r.email for r in rows}, "nothing delivered that was not stored"

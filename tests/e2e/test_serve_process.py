"""The whole service as an operator runs it: CLI key, `kirim serve`, kill -9, restart."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.process import KirimProcess, kirim_cli, kirim_env
from tests.support.smtpd import RecordingSmtpServer

pytestmark = pytest.mark.slow


def _wait(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _post(client: httpx.Client, i: int) -> str:
    r = client.post(
        "/v1/messages",
        json={
            "from": "app@example.com",
            "to": [f"user{i}@example.com"],
            "subject": f"n{i}",
            "text": "hi",
        },
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_send_kill_restart_delivers_each_once(tmp_path: Path) -> None:
    smtp = RecordingSmtpServer().start()
    env = kirim_env(
        database_url=f"sqlite:///{tmp_path / 'kirim.db'}",
        smtp_url=smtp.url,
        retry_min_delay=0.3,
        retry_max_delay=0.5,
        lease_seconds=2,
        smtp_timeout_scale=0.02,
        worker_poll_interval=0.1,
    )
    key = kirim_cli(env, "keys", "create", "--name", "e2e").strip()
    assert key.startswith("kirim_") and "\n" not in key
    log = tmp_path / "serve.log"
    proc = KirimProcess(env, "serve", log=log).start()
    try:
        client = httpx.Client(
            base_url=proc.base_url, headers={"Authorization": f"Bearer {key}"}, trust_env=False
        )
        first = _post(client, 0)
        _wait(lambda: client.get(f"/v1/messages/{first}").json()["status"] == "sent")
        assert smtp.handler.counts()["user0@example.com"] == 1

        # Upstream goes down; accepted mail must survive a kill -9 of the only process.
        smtp.stop()
        ids = [_post(client, i) for i in range(1, 21)]
        time.sleep(0.5)  # let the worker try (and fail) some of them
        proc.kill9()
        client.close()

        smtp.start()
        proc = KirimProcess(env, "serve", log=log, port=proc.port).start()
        client = httpx.Client(
            base_url=proc.base_url, headers={"Authorization": f"Bearer {key}"}, trust_env=False
        )

        def all_sent() -> bool:
            return all(client.get(f"/v1/messages/{m}").json()["status"] == "sent" for m in ids)

        _wait(all_sent, timeout=60)
        counts = smtp.handler.counts()
        assert all(counts[f"user{i}@example.com"] == 1 for i in range(21)), counts
        assert sum(counts.values()) == 21
        per_message_id = Counter(m.message_id for m in smtp.handler.messages())
        assert max(per_message_id.values()) == 1
        client.close()
    finally:
        proc.stop()
        smtp.stop()
    assert "Traceback" not in log.read_text()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_serve_api_process_delivers_while_its_delivery_process_is_stopped(
    tmp_path: Path,
) -> None:
    """`kirim serve` wires the idle-time helper: with its one delivery child frozen
    (SIGSTOP), a batch accepted by the API is still delivered, each message once."""
    smtp = RecordingSmtpServer().start()
    env = kirim_env(
        database_url=f"sqlite:///{tmp_path / 'kirim.db'}",
        smtp_url=smtp.url,
        smtp_timeout_scale=0.02,
        serve_worker_processes=1,
    )
    key = kirim_cli(env, "keys", "create", "--name", "e2e").strip()
    log = tmp_path / "serve.log"
    proc = KirimProcess(env, "serve", log=log).start()
    [child] = _children(proc.pid)
    os.kill(child, signal.SIGSTOP)
    try:
        with httpx.Client(
            base_url=proc.base_url, headers={"Authorization": f"Bearer {key}"}, trust_env=False
        ) as client:
            batch = [
                {
                    "from": "app@example.com",
                    "to": [f"b{i}@example.com"],
                    "subject": "s",
                    "text": "t",
                }
                for i in range(10)
            ]
            r = client.post("/v1/messages/batch", json={"messages": batch})
            assert r.status_code in (200, 202), r.text
            _wait(lambda: sum(smtp.handler.counts().values()) >= 10, timeout=20)
        assert smtp.handler.counts() == Counter({f"b{i}@example.com": 1 for i in range(10)})
    finally:
        os.kill(child, signal.SIGCONT)
        proc.stop()
        smtp.stop()
    assert "Traceback" not in log.read_text()

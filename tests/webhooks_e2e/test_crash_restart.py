"""kill -9 of a real `kirim serve` after the state change, before the webhook went out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.http_receiver import HttpReceiver
from tests.support.ports import free_port
from tests.support.smtpd import RecordingSmtpServer
from tests.webhooks_e2e.conftest import verify

ROOT = Path(__file__).resolve().parents[2]


def _env(**settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIRIM_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({f"KIRIM_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=fh,
            stderr=fh,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"kirim exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1, trust_env=False).is_success:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"kirim not ready:\n{log.read_text()[-3000:]}")


def _until(predicate: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {within}s")


def test_event_committed_before_kill_is_sent_after_restart(tmp_path: Path) -> None:
    receiver = HttpReceiver().start(up=False)
    smtp = RecordingSmtpServer().start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        env = _env(
            database_url=f"sqlite:///{tmp_path / 'kirim.db'}",
            smtp_url=smtp.url,
            webhook_allowed_networks="127.0.0.0/8",
            webhook_retry_delays="2,2,2",
            webhook_timeout=1,
            worker_poll_interval=0.1,
            smtp_timeout_scale=0.05,
        )
        out = subprocess.run(
            [sys.executable, "-m", "service", "keys", "create", "--name", "crash"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        key = out.stdout.strip()
        port = free_port()
        log = tmp_path / "serve.log"
        procs.append(_serve(env, port, log))
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            trust_env=False,
            timeout=10,
        )
        hook = client.post("/v1/webhooks", json={"url": receiver.url_for("/in")}).json()
        r = client.post(
            "/v1/messages",
            json={"from": "a@example.com", "to": ["z@example.com"], "subject": "s", "text": "t"},
        )
        assert r.status_code == 202, r.text
        mid = r.json()["id"]

        def attempted_once() -> bool:
            rows = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]
            return bool(rows) and rows[0]["attempts"] >= 1

        # The send committed, the webhook was refused once and is waiting for its retry.
        _until(attempted_once)
        assert client.get(f"/v1/messages/{mid}").json()["status"] == "sent"
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        client.close()
        assert receiver.requests == []

        receiver.up()
        procs.append(_serve(env, port, log))
        got = receiver.wait_for(1, timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        receiver.stop()
        smtp.stop()
    payload = verify(hook["secret"], got[0])
    assert payload["type"] == "message.sent" and payload["data"]["message_id"] == mid
    assert len(smtp.handler.messages()) == 1

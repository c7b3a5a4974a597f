"""`kirim serve`'s default layout: the API in one process, delivery in a child process.

The child is woken through the wake socket (the poll interval here is 30 s, so only a
wake-up explains fast delivery), restarted if it dies, stopped after the API on SIGTERM,
and ends by itself when its parent is killed outright.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.scaleout.cluster import SmtpSink, wait_until
from tests.support.http_receiver import HttpReceiver
from tests.support.process import KirimProcess, kirim_cli, kirim_env

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the fields after the last ")".
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _send(client: httpx.Client, to: str) -> None:
    r = client.post(
        "/v1/messages",
        json={"from": "a@example.com", "to": [to], "subject": "s", "text": "t"},
    )
    assert r.status_code == 202, r.text


def _sent_metric(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kirim_deliveries_total{") and 'status="sent"' in line
    )


def _env(tmp_path: Path, sink: SmtpSink) -> dict[str, str]:
    return kirim_env(
        database_url=f"sqlite:///{tmp_path}/kirim.db",
        smtp_url=sink.url,
        worker_poll_interval=30,
        shutdown_grace=5,
        log_level="WARNING",
    )


def test_delivery_runs_in_a_child_that_is_woken_and_restarted(tmp_path: Path) -> None:
    with SmtpSink() as sink:
        env = _env(tmp_path, sink)
        key = kirim_cli(env, "keys", "create", "--name", "layout").strip()
        api = KirimProcess(env, "serve", log=tmp_path / "serve.log").start()
        assert api.proc is not None
        try:
            wait_until(lambda: len(_children(api.pid)) == 1, timeout=20, what="worker child")
            (child,) = _children(api.pid)
            assert b"worker" in Path(f"/proc/{child}/cmdline").read_bytes()
            client = httpx.Client(
                base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, trust_env=False
            )
            _send(client, "warm@example.com")
            wait_until(lambda: sink.total() == 1, timeout=60, what="first delivery")
            latencies = []
            for i in range(10):
                time.sleep(0.1)  # the child falls back into its 30 s idle wait
                started = time.monotonic()
                _send(client, f"u{i}@example.com")
                wait_until(lambda n=i + 2: sink.total() == n, timeout=20, what="delivery")
                latencies.append(time.monotonic() - started)
            print(f"\nPOST -> smtp-sink via the wake socket: max {max(latencies) * 1000:.0f} ms")
            assert max(latencies) < 10, latencies  # far below the 30 s poll

            # A child that dies is replaced, and the replacement delivers.
            os.kill(child, signal.SIGKILL)
            wait_until(
                lambda: [p for p in _children(api.pid) if p != child] != [],
                timeout=20,
                what="a new worker child",
            )
            _send(client, "after@example.com")
            wait_until(lambda: sink.total() == 12, timeout=30, what="delivery by the new child")
            # The API's /metrics adds up its children, the killed one included.
            wait_until(
                lambda: _sent_metric(client) == 12, timeout=20, what="deliveries in /metrics"
            )
            client.close()
            (replacement,) = _children(api.pid)
        finally:
            code = api.stop()
        assert code in (0, -15)  # SIGTERM: the API drains, then the children, then it exits
        assert not _alive(replacement)
        log = (tmp_path / "serve.log").read_text()
        assert "Traceback" not in log
        assert "exited with -9; restarting" in log


def test_the_api_opens_its_port_once_its_child_is_delivering(tmp_path: Path) -> None:
    """Mail accepted by a `kirim serve` that answers is never left waiting for start-up."""
    with SmtpSink() as sink:
        env = {**_env(tmp_path, sink), "KIRIM_LOG_LEVEL": "INFO"}
        api = KirimProcess(env, "serve", log=tmp_path / "serve.log").start()
        api.stop()
    lines = (tmp_path / "serve.log").read_text().splitlines()
    # The child logs "worker <name> started" just before it tells the parent it runs.
    running = [i for i, line in enumerate(lines) if re.search(r"worker \S+:\d+:\w+ started", line)]
    listening = [i for i, line in enumerate(lines) if "Uvicorn running" in line]
    assert running and listening, lines[-30:]
    assert running[0] < listening[0]


def test_a_child_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    with SmtpSink() as sink:
        env = _env(tmp_path, sink)
        api = KirimProcess(env, "serve", log=tmp_path / "serve.log").start()
        wait_until(lambda: len(_children(api.pid)) == 1, timeout=20, what="worker child")
        (child,) = _children(api.pid)
        api.kill9()
        try:
            # SIGTERM from the kernel: it drains (within shutdown_grace) and exits.
            wait_until(lambda: not _alive(child), timeout=20, what="the orphaned child to exit")
        finally:
            if _alive(child):
                os.kill(child, signal.SIGKILL)


def test_a_webhook_queued_by_the_api_process_is_sent_by_its_child_at_once(
    tmp_path: Path,
) -> None:
    # The API process runs no dispatcher: its commit announces the new webhook delivery to
    # the child's dispatcher over the wake socket. With a 30 s poll, nothing else explains
    # an arrival within seconds.
    with SmtpSink() as sink, HttpReceiver().start() as receiver:
        env = {**_env(tmp_path, sink), "KIRIM_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}
        key = kirim_cli(env, "keys", "create", "--name", "hooks").strip()
        api = KirimProcess(env, "serve", log=tmp_path / "serve.log").start()
        try:
            client = httpx.Client(
                base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, trust_env=False
            )
            r = client.post(
                "/v1/webhooks",
                json={"url": receiver.url_for("/hook"), "events": ["message.queued"]},
            )
            assert r.status_code == 201, r.text
            _send(client, "warm@example.com")
            receiver.wait_for(1, timeout=60)  # the child is up and listening
            time.sleep(0.2)  # its dispatcher falls back into its 30 s idle wait
            started = time.monotonic()
            _send(client, "hooked@example.com")
            got = receiver.wait_for(2, timeout=15)
            took = time.monotonic() - started
            client.close()
        finally:
            api.stop()
        print(f"\nmessage.queued webhook from the child: {took * 1000:.0f} ms")
        assert all(b'"message.queued"' in req.body for req in got)
        assert b"hooked@example.com" in got[1].body

"""Checks of the harness's own measuring parts against real processes and servers on
loopback. Run with ``.venv/bin/pytest bench``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosmtplib
import pytest

from bench import load
from bench.install import find_tool
from bench.postfix import PrivatePostfix
from bench.procs import (
    free_port,
    tree_cpu_seconds,
    tree_pids,
    tree_pss_bytes,
    wait_gone,
    wait_quiet,
)
from bench.report import Result, percentile, ratio_rows, render_markdown, render_text
from bench.sink import Sink

needs_sink = pytest.mark.skipif(find_tool("smtp-sink") is None, reason="smtp-sink missing")

BURN = "import time\nend = time.process_time() + {0}\nwhile time.process_time() < end: pass\n"


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_tree_cpu_counts_exited_grandchildren() -> None:
    # The parent spawns a child that burns 0.4 s of CPU and exits; the parent then sleeps,
    # so all measured CPU must come through the reaped-children counters.
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {BURN.format(0.4)!r}])\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        # Only the parent is left once the child has exited and been reaped.
        while time.monotonic() < deadline and (
            tree_pids(parent.pid) != [parent.pid] or tree_cpu_seconds(parent.pid) < 0.4
        ):
            time.sleep(0.05)
        assert tree_pids(parent.pid) == [parent.pid]
        assert 0.4 <= tree_cpu_seconds(parent.pid) < 1.5
        assert tree_pss_bytes(parent.pid) > 1_000_000
    finally:
        parent.kill()
        parent.wait()


async def test_wait_quiet_returns_after_busy_child_stops() -> None:
    code = BURN.format(0.6) + "time.sleep(30)\n"
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    try:
        cpu = await wait_quiet(parent.pid, limit_seconds=10)
        assert cpu >= 0.6
    finally:
        parent.kill()
        await parent.wait()


@needs_sink
async def test_sink_counts_and_times_each_message() -> None:
    sink = Sink(free_port())
    await sink.start()
    try:
        before = time.monotonic()
        for index in range(5):
            await aiosmtplib.send(
                f"Subject: {index}\r\n\r\nbody\r\n", sender="a@example.com",
                recipients=["b@example.com"], hostname="127.0.0.1", port=sink.port,
                local_hostname="test", start_tls=False, timeout=10,
            )  # fmt: skip
        assert await sink.wait_for(5, time.monotonic() + 10)
        assert sink.count == 5
        assert before <= sink.arrivals[0] <= sink.arrivals[-1] <= time.monotonic()
        assert not await sink.wait_for(6, time.monotonic() + 0.3)
    finally:
        await sink.stop()


async def _serve(handler: Any) -> tuple[asyncio.Server, int]:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ")
            pairs = (line.split(": ", 1) for line in lines[1:] if ": " in line)
            headers = {name.lower(): value for name, value in pairs}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status, payload = handler(method, path, headers, body)
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await connection(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_post_singles_and_latency_sample_against_http_server() -> None:
    created = datetime(2025, 1, 1, tzinfo=UTC)
    seen: list[dict[str, Any]] = []

    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        import json

        if method == "POST" and path == "/v1/messages":
            assert headers.get("authorization") == "Bearer k"
            seen.append(json.loads(body))
            if len(seen) == 3:
                return 500, b'{"title": "boom"}'
            return 202, json.dumps({"id": f"msg_{len(seen)}", "status": "queued"}).encode()
        number = int(path.rsplit("_", 1)[1])
        sent = created + timedelta(milliseconds=10 * number)
        detail = {"created_at": created.isoformat(),
                  "recipients": [{"status": "sent", "sent_at": sent.isoformat()}]}  # fmt: skip
        return 200, json.dumps(detail).encode()

    server, port = await _serve(handler)
    async with server, load.client(f"http://127.0.0.1:{port}", "k", 4) as http:
        outcome = await load.post_singles(http, 10, 4)
        assert len(seen) == 10 and len(outcome.ids) == 9
        assert outcome.failures == {"500": 1} and "boom" in outcome.first_failure
        assert seen[0]["to"] == [load.RECIPIENT] and len(seen[0]["text"]) == 512
        latencies = await load.api_latencies(http, outcome.ids, 100, 3)
    expected = sorted(int(i.rsplit("_", 1)[1]) / 100 for i in outcome.ids)
    assert sorted(latencies) == pytest.approx(expected)


async def test_batch_missing_endpoint_is_reported_as_none() -> None:
    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        return 404, b'{"title": "Not Found"}'

    server, port = await _serve(handler)
    async with server, load.client(f"http://127.0.0.1:{port}", "k", 4) as http:
        assert await load.post_batches(http, 1200, 4) is None


def test_sent_time_falls_back_to_events() -> None:
    stamp = "2025-01-01T00:00:01.500000+00:00"
    detail = {"recipients": [{"status": "sent"}],
              "events": [{"type": "message.queued", "created_at": "2025-01-01T00:00:00Z"},
                         {"type": "message.sent", "created_at": stamp}]}  # fmt: skip
    assert load.sent_time(detail) == datetime.fromisoformat(stamp)
    assert load.sent_time({"recipients": [{"status": "queued"}]}) is None


def test_report_ratios_and_markdown() -> None:
    results = [
        Result("postfix", "throughput", 100, 400.0, None, 500.0, 900.0, 2.0, 160.0),
        Result("kirim", "single", 100, 800.0, 1000.0, 50.0, 90.0, 1.0, 80.0, ["a note"]),
    ]
    assert ratio_rows(results) == [
        ("kirim single / postfix throughput", "2.00x", "0.10x", "0.10x", "0.50x", "0.50x")
    ]
    text = render_text(results)
    assert "kirim single: a note" in text and "1,000" in text
    markdown = render_markdown(results, "python -m bench", "Intro.")
    assert "| kirim | single | 100 | 800 | 1,000 |" in markdown and "SQLite" in markdown


@needs_sink
@pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance needs root")
async def test_private_postfix_relays_to_sink_and_stops_cleanly() -> None:
    sink = Sink(free_port())
    postfix = PrivatePostfix(free_port(), sink.port)
    await sink.start()
    try:
        await postfix.start()
        master = postfix.master_pid
        assert len(tree_pids(master)) > 1
        for index in range(5):
            await aiosmtplib.send(
                f"Subject: {index}\r\n\r\nbody\r\n", sender="a@example.com",
                recipients=["b@example.com"], hostname="127.0.0.1", port=postfix.smtpd_port,
                local_hostname="test", start_tls=False, timeout=10,
            )  # fmt: skip
        assert await sink.wait_for(5, time.monotonic() + 30)
        # The log line is written just after the sink's 250; give it a moment.
        for _ in range(100):
            if len(postfix.sent_delays()) >= 5:
                break
            await asyncio.sleep(0.1)
        assert len(postfix.sent_delays()) == 5
        assert all(0 <= delay < 30 for delay in postfix.sent_delays())
    finally:
        await asyncio.to_thread(postfix.stop)
        await sink.stop()
    assert wait_gone(master, 5)
    assert not postfix.root.exists()

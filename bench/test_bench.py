"""Checks of the harness's own measuring parts against real processes and servers on
loopback. Run with ``.venv/bin/pytest bench``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from bench import __main__ as bench_main
from bench import far_upstream, instructions, load, preload, procs, raw_http, scenarios
from bench.install import find_tool
from bench.kirim import DEFAULT_POSTGRES_ADMIN_URL, KirimServer, SeedDatabase
from bench.layout import SERVE, Layout, parse_layout
from bench.postfix import PrivatePostfix
from bench.procs import (
    PeakMemory,
    free_port,
    tree_cpu_seconds,
    tree_pids,
    tree_pss_bytes,
    wait_gone,
    wait_quiet,
)
from bench.report import (
    GROWTH_BEGIN,
    GROWTH_END,
    Result,
    growth_checks,
    growth_ratio_rows,
    growth_section,
    median_ratio_rows,
    percentile,
    ratio_rows,
    render_growth_markdown,
    render_markdown,
    render_text,
    speed_check,
    with_growth,
)
from bench.sink import Sink
from service.db.engine import Database
from service.db.reads import get_message, list_messages

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


async def _serve(handler: Any, connections: list[int] | None = None) -> tuple[asyncio.Server, int]:
    """A minimal HTTP/1.1 keep-alive server; appends its port to ``connections`` for each
    connection it accepts."""

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
        if connections is not None:
            connections.append(writer.get_extra_info("sockname")[1])
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
        outcome = await raw_http.post_singles("127.0.0.1", [port], "k", 10, 4, load.message)
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
    async with server:
        assert await load.post_batches("127.0.0.1", [port], "k", 1200, 4) is None


def test_spread_deals_targets_in_turn() -> None:
    assert load.spread([8001, 8002], 5) == [8001, 8002, 8001, 8002, 8001]
    assert load.spread([8001], 3) == [8001, 8001, 8001]
    with pytest.raises(ValueError):
        load.spread([], 2)


async def test_post_singles_spreads_connections_over_api_ports() -> None:

    hosts: list[str] = []

    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        hosts.append(headers["host"])
        return 202, json.dumps({"id": f"msg_{len(hosts)}"}).encode()

    connections: list[int] = []
    first, port_a = await _serve(handler, connections)
    second, port_b = await _serve(handler, connections)
    async with first, second:
        outcome = await raw_http.post_singles(
            "127.0.0.1", [port_a, port_b], "k", 40, 6, load.message
        )
    assert len(outcome.ids) == 40 and not outcome.failures
    assert sorted(connections) == sorted([port_a] * 3 + [port_b] * 3)
    # Each request names the server its connection goes to.
    assert len(hosts) == 40 and set(hosts) == {f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"}


async def test_post_batches_spread_over_api_ports() -> None:

    hosts: list[str] = []
    bodies: list[dict[str, Any]] = []

    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        assert (method, path, headers["authorization"]) == (
            "POST",
            "/v1/messages/batch",
            "Bearer k",
        )
        hosts.append(headers["host"])
        bodies.append(json.loads(body))
        count = len(bodies[-1]["messages"])
        return 202, json.dumps({"data": [{"id": f"msg_{i}"} for i in range(count)]}).encode()

    connections: list[int] = []
    first, port_a = await _serve(handler, connections)
    second, port_b = await _serve(handler, connections)
    async with first, second:
        outcome = await load.post_batches("127.0.0.1", [port_a, port_b], "k", 1600, 64)
        assert outcome is not None and len(outcome.ids) == 1600 and not outcome.failures
        # Four batches, so four senders: two on each API process.
        assert sorted(connections) == sorted([port_a, port_a, port_b, port_b])
    assert sorted(hosts) == sorted(f"127.0.0.1:{p}" for p in [port_a, port_b] * 2)
    # Every message once, 500 to a batch, as the load always sent them.
    messages = [m for body in bodies for m in body["messages"]]
    assert sorted(len(body["messages"]) for body in bodies) == [100, 500, 500, 500]
    assert sorted(m["subject"] for m in messages) == sorted(f"bench {i}" for i in range(1600))
    assert messages[0] == load.message(int(messages[0]["subject"].split()[1]))


async def test_post_batches_counts_failed_batches_and_goes_on() -> None:
    seen: list[int] = []

    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        seen.append(len(json.loads(body)["messages"]))
        if len(seen) == 2:
            return 503, b'{"title": "busy"}'
        return 207, json.dumps({"results": [{"id": f"m{i}"} for i in range(seen[-1])]}).encode()

    server, port = await _serve(handler)
    async with server:
        outcome = await load.post_batches("127.0.0.1", [port], "k", 1500, 1)
    assert outcome is not None and len(seen) == 3
    assert len(outcome.ids) == 1000 and outcome.failures == {"503": 1}
    assert "busy" in outcome.first_failure


class _Transport(asyncio.Transport):
    """Records what a protocol writes; closing it ends the connection at once."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connection_lost(None)


async def test_pipeline_reads_responses_split_across_reads() -> None:
    outcome = load.LoadOutcome()
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    pipeline = raw_http.Pipeline(b"P:", [b"r0", b"r1", b"r2"], iter(range(3)),
                                 raw_http.single_answer(outcome), outcome, done)  # fmt: skip
    transport = _Transport(pipeline)
    pipeline.connection_made(transport)
    assert transport.written == [b"P:r0"]
    # One byte per read; headers in capitals, the length not the last of them.
    body = b'{"id":"msg_a","status":"queued"}'
    first = b"HTTP/1.1 202 Accepted\r\nCONTENT-LENGTH: %d\r\nX-A: b\r\n\r\n%s" % (len(body), body)
    for at in range(len(first)):
        assert transport.written == [b"P:r0"]
        pipeline.data_received(first[at : at + 1])
    assert outcome.ids == ["msg_a"] and transport.written == [b"P:r0", b"P:r1"]
    # Head and body in two reads, spaced JSON (not the compact one Kirim writes).
    body = b'{"id": "msg_b", "status": "queued"}'
    pipeline.data_received(b"HTTP/1.1 202 Accepted\r\ncontent-length: %d\r\n\r\n" % len(body))
    pipeline.data_received(body)
    assert outcome.ids == ["msg_a", "msg_b"] and transport.written[-1] == b"P:r2"
    # A non-202 is a failure with its body; then nothing is left, so the connection closes.
    pipeline.data_received(b'HTTP/1.1 422 Unprocessable\r\ncontent-length: 16\r\n\r\n{"title": ')
    assert not done.done()
    pipeline.data_received(b'"bad"}')
    assert outcome.failures == {"422": 1} and outcome.first_failure == '422: {"title": "bad"}'
    assert done.done() and transport.closed and len(transport.written) == 3


def test_message_id_of_compact_and_other_202_bodies() -> None:
    assert raw_http.message_id(b'{"id":"msg_1","status":"queued"}') == "msg_1"
    assert raw_http.message_id(b'{"id": "msg_2", "status": "queued"}') == "msg_2"
    assert raw_http.message_id(b'{"status":"queued","id":"msg_3"}') == "msg_3"
    assert raw_http.message_id(b'{"id":"a\\"b","x":1}') == 'a"b'
    assert raw_http.message_id(b'{"id":"caf\\u00e9"}') == "caf\u00e9"
    with pytest.raises(KeyError):
        raw_http.message_id(b'{"status":"queued"}')


async def _serve_raw(respond: Any) -> tuple[asyncio.Server, int, list[int]]:
    """A keep-alive server that reads whole requests and leaves the answer to ``respond``
    (number of the request, 1-based; its body; the writer), which returns False to close.
    Also returns the list of request numbers by connection order of their connection."""
    served = [0]
    connections: list[int] = []

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                served[0] += 1
                if not await respond(served[0], body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


def _response(status: int, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


async def test_post_singles_counts_a_connection_closed_mid_response() -> None:
    async def respond(number: int, body: bytes, writer: asyncio.StreamWriter) -> bool:
        response = _response(202, {"id": f"msg_{number}", "status": "queued"})
        if number == 3:  # part of the body, then the connection closes
            writer.write(response[:-5])
            await writer.drain()
            return False
        for at in range(0, len(response), 7):  # in pieces, which may arrive apart
            writer.write(response[at : at + 7])
            await writer.drain()
        return True

    server, port, connections = await _serve_raw(respond)
    async with server:
        outcome = await raw_http.post_singles("127.0.0.1", [port], "k", 10, 2, load.message)
    # The other connection takes every message left: each one was sent once.
    assert len(connections) == 2 and len(outcome.ids) == 9 and "msg_3" not in outcome.ids
    assert outcome.failures == {"IncompleteReadError": 1}
    assert "expected bytes" in outcome.first_failure
    assert outcome.started <= outcome.finished


async def test_post_singles_counts_refused_connections_and_202_without_id() -> None:
    closed_port = free_port()  # nothing listens there
    outcome = await raw_http.post_singles("127.0.0.1", [closed_port], "k", 5, 2, load.message)
    assert outcome.failures == {"ConnectionRefusedError": 2} and not outcome.ids

    async def respond(number: int, body: bytes, writer: asyncio.StreamWriter) -> bool:
        payload: dict[str, Any] = {"status": "queued"} if number == 2 else {"id": f"m{number}"}
        writer.write(_response(202, payload))
        return True

    server, port, _ = await _serve_raw(respond)
    async with server:
        outcome = await raw_http.post_singles("127.0.0.1", [port], "k", 4, 1, load.message)
    assert outcome.ids == ["m1", "m3", "m4"] and outcome.failures == {"202 without an id": 1}


async def test_post_batches_goes_on_after_a_connection_closed_mid_response() -> None:
    async def respond(number: int, body: bytes, writer: asyncio.StreamWriter) -> bool:
        count = len(json.loads(body)["messages"])
        response = _response(202, {"data": [{"id": f"m{number}_{i}"} for i in range(count)]})
        if number == 1:
            writer.write(response[: len(response) // 2])
            await writer.drain()
            return False
        writer.write(response)
        return True

    server, port, connections = await _serve_raw(respond)
    async with server:
        outcome = await load.post_batches("127.0.0.1", [port], "k", 1200, 1)
    # The first batch is lost with its connection; the sender goes on with a new one.
    assert outcome is not None and outcome.failures == {"IncompleteReadError": 1}
    assert len(outcome.ids) == 700 and len(connections) == 2


async def test_post_paced_keeps_its_pace_and_spreads_over_api_ports() -> None:
    hosts: list[str] = []

    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        hosts.append(headers["host"])
        if len(hosts) == 3:
            return 503, b'{"title": "busy"}'
        return 202, json.dumps({"id": f"msg_{len(hosts)}"}).encode()

    connections: list[int] = []
    first, port_a = await _serve(handler, connections)
    second, port_b = await _serve(handler, connections)
    async with first, second:
        starts, paced = await raw_http.post_paced(
            "127.0.0.1", [port_a, port_b], "k", 8, 20.0, load.message
        )
    assert len(starts) == len(paced.ids) == 7 and paced.failures == {"503": 1}
    assert starts == sorted(starts)
    # Open loop at 20/s: the eighth request starts no sooner than 350 ms after the first.
    assert starts[-1] - paced.started >= 0.35
    assert sorted(hosts) == sorted(f"127.0.0.1:{p}" for p in [port_a, port_b] * 4)
    # 100 ms apart on each port, later requests find their port's connection idle again.
    assert set(connections) == {port_a, port_b} and len(connections) < 8


def test_layout_parsing() -> None:
    assert parse_layout("serve") == SERVE and not SERVE.scale_out and SERVE.label == ""
    two = parse_layout("2x2")
    assert (two.apis, two.workers, two.name, two.label) == (2, 2, "2x2", "2 API + 2 worker")
    assert parse_layout("2x4") == Layout(2, 4)
    for bad in ("2x0", "0x2", "2", "x2", "2x", "2X2", " 2x2", "100x1"):
        with pytest.raises(ValueError):
            parse_layout(bad)


def test_layout_arguments() -> None:
    args = bench_main.parse_args(["--database", "postgresql", "--layout", "2x2"])
    assert args.layout == Layout(2, 2)
    assert bench_main.parse_args([]).layout == SERVE
    assert bench_main.parse_args(["--layout", "serve"]).layout == SERVE
    names = [name for name, *_ in bench_main.plan(args, scenarios.Options(layout=args.layout))]
    assert names == [
        "postfix throughput",
        "postfix idle",
        "kirim single, 2 API + 2 worker",
        "kirim batch, 2 API + 2 worker",
        "kirim idle, 2 API + 2 worker",
    ]
    for argv in (
        ["--layout", "2x2"],  # SQLite: the processes would not share a queue
        ["--database", "postgresql", "--layout", "two"],
        ["--database", "postgresql", "--layout", "2x2", "--mode", "growth"],
        ["--database", "postgresql", "--layout", "2x2", "--system", "postfix"],
    ):
        with pytest.raises(SystemExit):
            bench_main.parse_args(argv)
    with pytest.raises(ValueError):
        KirimServer(1, 2, "sqlite", "", {}, layout=Layout(2, 2))


def test_layout_shows_in_rows_ratios_and_notes() -> None:
    results = [
        Result("postfix", "throughput", 100, 400.0, None, 500.0, 900.0, 2.0, 160.0),
        Result("kirim", "single", 100, 800.0, 1000.0, 50.0, 90.0, 1.0, 80.0, ["n"],
               layout="2 API + 2 worker"),
    ]  # fmt: skip
    text = render_text(results)
    assert "single, 2 API + 2 worker" in text.splitlines()[3]
    assert "kirim single, 2 API + 2 worker / postfix throughput" in text
    assert "kirim single, 2 API + 2 worker: n" in text
    markdown = render_markdown(results, "python -m bench", "Intro.")
    assert "| kirim | single, 2 API + 2 worker | 100 | 800 |" in markdown


def test_tree_measures_add_up_over_several_roots() -> None:
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
                for _ in range(2)]  # fmt: skip
    try:
        pids = [p.pid for p in sleepers]
        assert tree_pids(pids) == pids
        assert tree_pids([*pids, 2**22 + 1]) == pids  # a root that is gone counts nothing
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and min(map(tree_pss_bytes, pids)) < 1_000_000:
            time.sleep(0.05)
        # PSS of shared pages moves as other processes come and go: compare loosely.
        together, apart = tree_pss_bytes(pids), sum(tree_pss_bytes(pid) for pid in pids)
        assert together == pytest.approx(apart, rel=0.25) and together > 2_000_000
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()


TREE = """
import os, subprocess, sys, threading, time
sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
forks = "import subprocess, sys, time\\np = subprocess.Popen(%r)\\nprint(p.pid, flush=True)\\n"
forker = subprocess.Popen([*sleep[:2], forks % (sleep,) + "time.sleep(60)"],
                          stdout=subprocess.PIPE)
grandchild = int(forker.stdout.readline())
threaded = []
started = threading.Event()
def spawn():  # a child of another thread than the main one
    threaded.append(subprocess.Popen(sleep).pid)
    started.set()
    time.sleep(60)
threading.Thread(target=spawn, daemon=True).start()
started.wait()
zombie = subprocess.Popen(["true"])
os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
print(forker.pid, grandchild, threaded[0], zombie.pid, flush=True)
time.sleep(60)
"""


def test_tree_walk_by_children_files_matches_the_walk_of_all_of_proc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert procs.CHILDREN_FILES  # this kernel has them; else tree_pids falls back
    root = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE)
    try:
        assert root.stdout is not None
        # Printed once every process of the tree is up (and the zombie has exited).
        members = [root.pid, *map(int, root.stdout.readline().split())]
        assert len(members) == 5
        walked = tree_pids(root.pid)
        assert walked[0] == root.pid and sorted(walked) == sorted(members)
        assert sorted(procs.tree_pids_by_parents(root.pid)) == sorted(members)
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            roots = [other.pid, root.pid, 2**22 + 1]  # the last one is gone
            walked = tree_pids(roots)
            assert walked[0] == other.pid and walked[1] == root.pid
            assert sorted(walked) == sorted(procs.tree_pids_by_parents(roots))
            monkeypatch.setattr(procs, "CHILDREN_FILES", False)
            assert sorted(tree_pids(roots)) == sorted(walked)
        finally:
            other.kill()
            other.wait()
    finally:
        for pid in members[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        root.kill()
        root.wait()


def test_sent_time_falls_back_to_events() -> None:
    stamp = "2025-01-01T00:00:01.500000+00:00"
    detail = {"recipients": [{"status": "sent"}],
              "events": [{"type": "message.queued", "created_at": "2025-01-01T00:00:00Z"},
                         {"type": "message.sent", "created_at": stamp}]}  # fmt: skip
    assert load.sent_time(detail) == datetime.fromisoformat(stamp)
    assert load.sent_time({"recipients": [{"status": "queued"}]}) is None


def test_rounds_interleave_and_pair_within_a_round() -> None:
    args = bench_main.parse_args(["--mode", "single", "--rounds", "3"])
    planned = [(name, n) for name, _, n in bench_main.plan(args, scenarios.Options())]
    assert planned == [
        (f"{system} (round {n})", n)
        for n in (1, 2, 3)
        for system in ("postfix throughput", "kirim single")
    ]
    for argv in (["--rounds", "0"], ["--mode", "growth", "--rounds", "2"]):
        with pytest.raises(SystemExit):
            bench_main.parse_args(argv)
    # Round 2's host was slow for Postfix alone: its pair says so, the median does not.
    results = [
        Result("postfix", "throughput", 100, 400.0, cpu_ms=2.0, round=1, speed_ms=300.0),
        Result("kirim", "single", 100, 1200.0, cpu_ms=1.0, round=1, speed_ms=310.0),
        Result("postfix", "throughput", 100, 200.0, cpu_ms=4.0, round=2, speed_ms=600.0),
        Result("kirim", "single", 100, 1300.0, cpu_ms=1.0, round=2, speed_ms=305.0),
        Result("postfix", "throughput", 100, 420.0, cpu_ms=2.0, round=3, speed_ms=320.0),
        Result("kirim", "single", 100, 1302.0, cpu_ms=1.0, round=3, speed_ms=300.0),
    ]
    assert [(name, rate) for name, rate, *_ in ratio_rows(results)] == [
        ("kirim single / postfix throughput, round 1", "3.00x"),
        ("kirim single / postfix throughput, round 2", "6.50x"),
        ("kirim single / postfix throughput, round 3", "3.10x"),
    ]
    assert median_ratio_rows(results) == [
        ("kirim single / postfix throughput (median of 3)", "3.10x", "-", "-", "0.50x", "-")
    ]
    assert median_ratio_rows(results[:2]) == []  # one round: nothing to take a median of
    results[1].notes = results[3].notes = ["how latency was taken"]
    text = render_text(results)
    assert "single, round 2" in text and "(median of 3)" in text
    assert text.count("how latency was taken") == 1
    markdown = render_markdown(results, "python -m bench", "Intro.")
    assert "| postfix | throughput, round 2 | 100 | 200 |" in markdown
    assert "| 600 |" in markdown and "### Median over the rounds" in markdown


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
        # The master forks its daemons (qmgr, pickup) after it is listening; on a loaded
        # machine that can take a moment.
        for _ in range(100):
            if len(tree_pids(master)) > 1:
                break
            await asyncio.sleep(0.1)
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


def test_peak_between_reads_a_stretch_of_the_samples() -> None:
    memory = PeakMemory(os.getpid())
    memory.samples = [(1.0, 10), (2.0, 50), (3.0, 20), (4.0, 30)]
    assert memory.peak == 50
    assert memory.peak_between(2.5, 4.0) == 30
    assert memory.peak_between(None, 1.5) == 10
    assert memory.peak_between(5.0, None) == 0


def _growth_results() -> list[Result]:
    return [
        Result("kirim", "single", 100, 100.0, 200.0, 10.0, 20.0, 5.0, 90.0, ["n"], 95.0),
        Result("kirim", "single", 100, 90.0, 150.0, 12.0, 30.0, 6.0, 95.0, [], 310.0, 1000),
        Result("kirim", "batch", 100, 500.0, 3000.0, 10.0, 20.0, 1.0, 90.0, [], 100.0),
        Result("kirim", "batch", 100, 400.0, 2900.0, 10.0, 20.0, 1.0, 90.0, [], 120.0, 1000),
    ]


def test_growth_ratios_and_targets() -> None:
    results = _growth_results()
    assert growth_ratio_rows(results) == [
        ("single: 1,000 / empty", "0.90x", "0.75x", "1.20x", "1.50x", "1.20x", "3.26x"),
        ("batch: 1,000 / empty", "0.80x", "0.97x", "1.00x", "1.00x", "1.00x", "1.20x"),
    ]
    checks = growth_checks(results)
    assert "single msgs/s: 0.90x of the empty run (target >= 0.80x): met" in checks
    assert "single accepts/s: 0.75x of the empty run (target >= 0.80x): NOT met" in checks
    assert "batch msgs/s: 0.80x of the empty run (target >= 0.80x): met" in checks
    assert checks[-1] == "highest peak of kirim serve: 310.0 MB (target < 300 MB): NOT met"


def test_growth_section_replaces_only_itself() -> None:
    section = render_growth_markdown(_growth_results(), "python -m bench --mode growth",
                                     "Intro.", {"database": "sqlite"})  # fmt: skip
    assert section.startswith(GROWTH_BEGIN) and section.rstrip().endswith(GROWTH_END)
    assert "| single | 1,000 | 100 | 90 | 150 |" in section
    page = render_markdown([Result("kirim", "single", 5, 1.0)], "python -m bench", "Intro.")
    first = with_growth(page, section)
    assert first.startswith(page.rstrip("\n")) and growth_section(first) == section
    newer = section.replace("sqlite", "postgresql")
    second = with_growth(first + "\nafter\n", newer)
    assert growth_section(second) == newer and second.endswith("\nafter\n")
    assert second.count(GROWTH_BEGIN) == 1 and second.startswith(page.rstrip("\n"))
    assert growth_section(page) is None
    # A note every run shares is printed once, naming the runs.
    assert "- single (0 stored), batch (0 stored): shared" in render_growth_markdown(
        [Result("kirim", "single", 1, 1.0, notes=["shared"]),
         Result("kirim", "batch", 1, 1.0, notes=["shared"])], "c", "i", {},
    )  # fmt: skip


def test_history_message_is_a_finished_delivery() -> None:
    now = time.time()
    shape = preload.Shape(count=1, end=now, cc_share=1.0, bounce_share=0.0)
    rng = random.Random(1)
    rows = preload.history_message(7, now - 3600, rng, shape)
    (message,) = rows.messages
    assert message["mime"] is not None and b"order 00000007" in message["mime"]
    assert message["message_id_header"].encode() in message["mime"]
    assert message["size"] == len(message["mime"])
    emails = [r["email"] for r in rows.recipients]
    assert all(r["status"] == "sent" and r["sent_at"] > r["created_at"] for r in rows.recipients)
    assert [a["recipient_id"] for a in rows.attempts] == [r["id"] for r in rows.recipients]
    assert all(a["code"] == 250 and a["outcome"] == "accepted" for a in rows.attempts)
    # A queued event, then a sent event, per recipient, numbered like the service does.
    seqs = [e["seq"] for e in rows.events]
    assert seqs == list(range(1, 2 * len(emails) + 1)) and message["event_seq"] == seqs[-1]
    assert [e["type"] for e in rows.events][-len(emails) :] == ["message.sent"] * len(emails)
    assert rows.suppressions == []
    for email in emails:
        assert email.encode() in message["mime"]

    bounced = preload.history_message(
        8, now - 9 * preload.DAY, rng, preload.Shape(count=1, end=now, bounce_share=1.0)
    )
    assert bounced.messages[0]["mime"] is None  # older than the body retention
    assert {r["status"] for r in bounced.recipients} == {"bounced"}
    assert [s["email"] for s in bounced.suppressions] == [r["email"] for r in bounced.recipients]


def test_created_times_cover_the_days_in_order() -> None:
    now = time.time()
    times = preload.created_times(preload.Shape(count=2000, end=now, days=3))
    assert times == sorted(times) and len(times) == 2000
    assert now - 3 * preload.DAY <= times[0] < now - 2.5 * preload.DAY
    assert now - 0.5 * preload.DAY < times[-1] <= now


def _postgres_reachable() -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", 5432)) == 0


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_seed_holds_history_the_service_reads(database: str) -> None:
    if database == "postgresql" and not _postgres_reachable():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    seed = SeedDatabase(database, DEFAULT_POSTGRES_ADMIN_URL)
    try:
        await seed.fill(300, days=2)
        assert seed.count == 300 and seed.seconds > 0 and seed.size_bytes > 0
        db = Database(seed.url)
        try:
            listed = await list_messages(db, tenant_id="default", limit=500, tag="receipt")
            assert 150 < len(listed) < 300  # the load's tenant has most of them
            newest = listed[0][0]
            view = await get_message(db, tenant_id="default", message_id=newest["id"])
        finally:
            await db.dispose()
        assert view is not None and view.status in ("sent", "bounced", "partially_sent")
        assert len(view.events) == 2 * len(view.recipients) == 2 * len(view.attempts)
        if database == "sqlite":
            await _serve_from(seed)
    finally:
        await seed.remove()
    assert not seed.root.exists()


async def _serve_from(seed: SeedDatabase) -> None:
    """``kirim serve`` started from the seed lists its history, on a copy of its own."""
    server = KirimServer(free_port(), free_port(), "sqlite", "", {}, seed)
    try:
        await server.start()
        async with load.client(server.base_url, server.api_key, 2) as http:
            listed = (await http.get("/v1/messages", params={"limit": 100})).json()
        items = next(v for v in listed.values() if isinstance(v, list))
        assert len(items) == 100  # of the load tenant's ~240
        assert (server.root / "kirim.db").stat().st_size >= seed.size_bytes
    finally:
        await server.stop()
    assert not server.root.exists()


@needs_sink
async def test_scale_out_layout_accepts_on_every_port_and_delivers() -> None:
    if not _postgres_reachable():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    sink = Sink(free_port())
    server = KirimServer(sink.port, free_port(), "postgresql", DEFAULT_POSTGRES_ADMIN_URL, {},
                         layout=Layout(2, 1))  # fmt: skip
    await sink.start()
    try:
        await server.start()
        assert len(set(server.ports)) == 2 and len(server.pids) == 3
        # The workers said they deliver (through their ready pipe); the APIs answer.
        assert len(server.worker_pids) == 1 and len(server.api_pids) == 2
        outcome = await raw_http.post_singles(
            "127.0.0.1", server.ports, server.api_key, 4, 2, load.message
        )
        assert len(outcome.ids) == 4 and not outcome.failures
        assert await sink.wait_for(4, time.monotonic() + 60)
        pids = server.pids
    finally:
        await server.stop()
        await sink.stop()
    assert all(wait_gone(pid, 5) for pid in pids)
    assert server.postgres is not None and not server.postgres.created
    assert not server.root.exists()


def test_the_host_speed_check_is_reported_with_the_machine() -> None:
    assert speed_check(rounds=1) > 0
    page = render_markdown(
        [Result("kirim", "single", 5, 1.0)], "python -m bench", "Intro.", {"speed": "230 / 240"}
    )
    machine_section = page.split("## Machine", 1)[1]
    assert "- speed: 230 / 240" in machine_section


def test_instructions_per_message_cancel_start_and_stop(tmp_path: Path) -> None:
    out = tmp_path / "callgrind.out"
    out.write_text("version: 1\ncmd: python\nevents: Ir\nfn=(1) main\n3 7\nsummary: 5170128740\n")
    small = (500, instructions.instructions(out))
    assert small == (500, 5_170_128_740)
    assert instructions.per_message(small, (2500, 7_942_169_618)) == 1_386_020.439
    with pytest.raises(ValueError):
        instructions.per_message((2500, 1), (500, 2))
    (tmp_path / "empty.out").write_text("events: Ir\n")
    with pytest.raises(RuntimeError):
        instructions.instructions(tmp_path / "empty.out")


async def test_far_upstream_delivers_every_message_both_ways() -> None:
    # A correctness check of the benchmark itself (rates are printed, never asserted).
    for handoff in (True, False):
        rate = await far_upstream._run(handoff, delay=0.002, messages=40, pool=4)
        assert rate > 0

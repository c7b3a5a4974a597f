"""Abusive requests against a real `kirim serve` process: fast 4xx, bounded memory, and
other clients keep being served."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.support.process import KirimProcess, kirim_cli, kirim_env
from tests.tenancy.helpers import GOOD, bearer

pytestmark = pytest.mark.asyncio

CAP = 1024 * 1024


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _stream_without_length(port: int, key: str, total: int) -> tuple[bytes, float]:
    """POST ``total`` bytes chunked; return the status line and the seconds it took."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        sent = 0
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += 0x10000
        except OSError:
            pass  # the server answered and closed: exactly what we want
        status = sock.makefile("rb").readline()
        return status, time.monotonic() - started
    finally:
        sock.close()


def _declared(port: int, key: str, length: int) -> tuple[bytes, float]:
    """Announce ``length`` bytes, send only the first few, and read the answer."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Length: {length}\r\n\r\n".encode()
            + b'{"text": "'
        )
        return sock.makefile("rb").readline(), time.monotonic() - started
    finally:
        sock.close()


async def test_abusive_bodies_fail_fast_and_memory_stays_bounded(tmp_path: Path) -> None:
    env = kirim_env(
        database_url=f"sqlite:///{tmp_path / 'k.db'}",
        smtp_url="smtp://127.0.0.1:9?tls=none",
        max_body_bytes=CAP,
        log_level="WARNING",
    )
    kirim_cli(env, "migrate")
    key = kirim_cli(env, "keys", "create", "--name", "abuse").strip()
    with KirimProcess(env, log=tmp_path / "kirim.log") as proc:
        assert proc.proc is not None
        pid = proc.proc.pid
        async with httpx.AsyncClient(
            base_url=proc.base_url, headers=bearer(key), timeout=30, trust_env=False
        ) as client:
            for _ in range(20):  # warm up, so the baseline includes normal working memory
                assert (await client.post("/v1/messages", json=GOOD)).status_code == 202
            baseline = _rss_kib(pid)

            stop = asyncio.Event()
            served: list[int] = []

            async def bystander() -> None:
                while not stop.is_set():
                    r = await client.post("/v1/messages", json={**GOOD, "subject": "ok"})
                    served.append(r.status_code)
                    await asyncio.sleep(0.02)

            side = asyncio.create_task(bystander())
            cases: list[tuple[str, bytes, set[int]]] = [
                ("deep", b"[" * 10_000 + b"]" * 10_000, {400}),
                ("deep-open", b'{"a":' * 10_000, {400}),
                (
                    "recipients",
                    json.dumps(
                        {**GOOD, "to": [f"u{i}@example.com" for i in range(10_000)]}
                    ).encode(),
                    {413, 422},
                ),
            ]
            for name, body, expected in cases:
                t0 = time.monotonic()
                r = await client.post(
                    "/v1/messages", content=body, headers={"content-type": "application/json"}
                )
                assert r.status_code in expected, (name, r.status_code, r.text[:200])
                assert r.headers["content-type"].startswith("application/problem+json"), name
                assert time.monotonic() - t0 < 2, name
            # 10,000 recipients within the body cap: refused by the recipient limit.
            many = {**GOOD, "to": [f"u{i}@e.co" for i in range(10_000)]}
            r = await client.post("/v1/messages", json=many)
            assert r.status_code == 422, r.status_code

            # Just over the cap and 100 MB, declared honestly: refused on the header alone.
            for length in (CAP + 1, 100 * 1024 * 1024):
                status, took = await asyncio.to_thread(_declared, proc.port, key, length)
                assert status.split()[1] == b"413" and took < 2, (length, status, took)
            big = 100 * 1024 * 1024
            # 100 MB without a length, streamed: refused once the cap is passed.
            status, took = await asyncio.to_thread(_stream_without_length, proc.port, key, big)
            assert status.split()[1] == b"413" and took < 10, (status, took)

            stop.set()
            await side
            assert served and set(served) == {202}, served
            assert (await client.get("/healthz")).status_code == 200
            grown_mib = (_rss_kib(pid) - baseline) / 1024
            assert grown_mib < 64, f"RSS grew by {grown_mib:.0f} MiB"

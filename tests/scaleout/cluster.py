"""Pieces of a scaled-out Kirim for tests: a recording smtp-sink, databases, load, queries.

``smtp-sink -D`` appends every received transaction (with one ``X-Rcpt-Args`` line per
accepted recipient) to one file, flushed per message: reading it back gives exact
per-recipient delivery counts from a C server that keeps up with many Python workers.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from tests.support import databases
from tests.support.ports import free_port

RCPT = re.compile(rb"^X-Rcpt-Args: <([^>]*)>", re.MULTILINE)
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


class SmtpSink:
    """Postfix's smtp-sink on loopback, recording every transaction to one file."""

    def __init__(self) -> None:
        self.port = free_port()
        # smtp-sink drops to "nobody" when run as root: it needs a directory it may write.
        self.dir = Path(tempfile.mkdtemp(prefix="kirim-sink-"))
        self.dir.chmod(0o777)
        self.dump = self.dir / "received"
        self.dump.touch()
        self.dump.chmod(0o666)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?tls=none"

    def start(self) -> SmtpSink:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [
                SMTP_SINK,
                *user,
                "-D",
                str(self.dump),
                "-m",
                "1024",
                f"127.0.0.1:{self.port}",
                "1024",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._listening, timeout=10, what="smtp-sink listening")
        return self

    def _listening(self) -> bool:
        import socket

        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def counts(self) -> Counter[str]:
        return Counter(m.decode() for m in RCPT.findall(self.dump.read_bytes()))

    def total(self) -> int:
        return len(RCPT.findall(self.dump.read_bytes()))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, step: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def fresh_pg(*, migrated: bool = True) -> Iterator[str]:
    """A new database on the machine's PostgreSQL for one test, dropped afterwards."""
    if migrated:
        name = databases.create_pg_database("scale")
    else:
        name = f"kirim_test_scale_{uuid.uuid4().hex[:8]}"
        asyncio.run(databases._admin(f'CREATE DATABASE "{name}"'))
    try:
        yield databases.pg_url(name)
    finally:
        databases.drop_pg_database(name)


# --- load ---------------------------------------------------------------------------


@dataclass
class Posted:
    """What the clients saw: recipient -> message id for every 202; failed tries by kind."""

    accepted: dict[str, str] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)  # status code or error name
    seconds: float = 0.0


async def post_load(
    bases: list[str],
    key: str,
    recipients: list[str],
    *,
    concurrency: int = 64,
    retries: int = 3,
    request_timeout: float = 30.0,
) -> Posted:
    """POST one message per recipient, spread over ``bases``, ``concurrency`` at a time.

    Each message carries an Idempotency-Key (its recipient), so a POST whose answer was
    lost (a keep-alive connection closed under it, a 503 while the database restarts) is
    repeated safely, as a real client would.

    Each of the ``concurrency`` senders has a client of its own per base, of one
    connection: one httpx client shared by 64 requests in flight spends about 12 ms of CPU
    per request in its pool (one connection each: about 2 ms), which made this load, not
    the servers under test, the limit.
    """
    out = Posted()
    todo = iter(enumerate(recipients))

    async def sender() -> None:
        clients = [
            httpx.AsyncClient(
                base_url=b,
                headers={"Authorization": f"Bearer {key}"},
                timeout=request_timeout,
                trust_env=False,
                limits=httpx.Limits(max_connections=1),
            )
            for b in bases
        ]
        try:
            for i, rcpt in todo:
                await one(clients, i, rcpt)
        finally:
            for c in clients:
                await c.aclose()

    async def one(clients: list[httpx.AsyncClient], i: int, rcpt: str) -> None:
        for attempt in range(retries + 1):
            client = clients[(i + attempt) % len(clients)]
            try:
                r = await client.post(
                    "/v1/messages",
                    headers={"Idempotency-Key": rcpt},
                    json={
                        "from": "app@example.com",
                        "to": [rcpt],
                        "subject": f"load {rcpt}",
                        "text": "scale-out test",
                    },
                )
            except httpx.TransportError as exc:
                out.refused[type(exc).__name__] += 1
            else:
                if r.status_code == 202:
                    out.accepted[rcpt] = r.json()["id"]
                    return
                out.refused[str(r.status_code)] += 1
            await asyncio.sleep(0.5 * (attempt + 1))

    started = time.monotonic()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    out.seconds = time.monotonic() - started
    return out


# --- database checks ----------------------------------------------------------------


@dataclass(frozen=True)
class RecipientRow:
    message_id: str
    email: str
    status: str
    possible_duplicate: bool


async def recipient_rows(url: str) -> list[RecipientRow]:
    conn = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT message_id, email, status, possible_duplicate FROM recipients"
        )
    finally:
        await conn.close()
    return [RecipientRow(r[0], r[1], r[2], r[3]) for r in rows]


async def scalar(url: str, sql: str) -> object:
    conn = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _dsn(url: str) -> str:
    from service.db.notify import asyncpg_dsn

    return asyncpg_dsn(url)

"""Kirim as subprocesses against a scripted SMTP server, with time scaled down."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.app import make_key
from tests.support.process import KirimProcess, kirim_env

# Every SMTP phase gets seconds, not minutes; the final dot keeps the longest wait.
FAST: dict[str, Any] = {
    "retry_min_delay": 0.2,
    "retry_max_delay": 0.4,
    "lease_seconds": 3,
    "worker_poll_interval": 0.1,
    "shutdown_grace": 5,
    "smtp_pool_size": 4,
    "smtp_timeout_scale": 1,
    "smtp_timeout_connect": 2,
    "smtp_timeout_greeting": 2,
    "smtp_timeout_command": 2,
    "smtp_timeout_mail": 2,
    "smtp_timeout_rcpt": 2,
    "smtp_timeout_data": 2,
    "smtp_timeout_data_block": 2,
    "smtp_timeout_final_dot": 3,
    "database_busy_timeout_ms": 300,
}


def env_for(database_url: str, smtp_url: str, **overrides: Any) -> dict[str, str]:
    return kirim_env(**{**FAST, "database_url": database_url, "smtp_url": smtp_url, **overrides})


def wait_until(predicate: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what or predicate}")


SEND_TRIES = 5


class Api:
    """A client for one running `kirim serve`."""

    def __init__(self, base_url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
            trust_env=False,
        )

    def send(self, to: Sequence[str], **body: Any) -> dict[str, Any]:
        payload = {"from": "app@example.com", "to": list(to), "subject": "s", "text": "hello"}
        payload.update(body)
        # The harness's busy timeout is short (300 ms): on a loaded machine another process's
        # write can outlast it, and the answer is a 503 that stored nothing and asks for a
        # retry. A client retries it; tests of the 503 itself post directly.
        for tries_left in range(SEND_TRIES - 1, -1, -1):
            r = self.http.post("/v1/messages", json=payload)
            if r.status_code != 503 or not tries_left:
                break
            time.sleep(0.2)
        assert r.status_code == 202, r.text
        data: dict[str, Any] = r.json()
        return data

    def get(self, message_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/messages/{message_id}")
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def statuses(self, message_id: str) -> dict[str, str]:
        return {r["email"]: r["status"] for r in self.get(message_id)["recipients"]}

    def wait_status(
        self, message_id: str, want: Callable[[dict[str, str]], bool], timeout: float = 20
    ) -> dict[str, Any]:
        wait_until(lambda: want(self.statuses(message_id)), timeout, f"{message_id} status")
        return self.get(message_id)

    def wait_all(self, message_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
        return self.wait_status(
            message_id, lambda st: bool(st) and set(st.values()) == {status}, timeout
        )

    def close(self) -> None:
        self.http.close()


def new_key(database_url: str) -> str:
    return asyncio.run(make_key(database_url))


@contextlib.contextmanager
def serve(
    database_url: str,
    smtp_url: str,
    log_dir: Path,
    *args: str,
    extra_env: dict[str, str] | None = None,
    **settings: Any,
) -> Iterator[tuple[KirimProcess, Api]]:
    """`kirim serve` (API and workers unless ``--no-workers``) and a client for it."""
    env = {**env_for(database_url, smtp_url, **settings), **(extra_env or {})}
    key = new_key(database_url)
    proc = KirimProcess(env, "serve", *args, log=log_dir / "serve.log").start()
    api = Api(proc.base_url, key)
    try:
        yield proc, api
    finally:
        api.close()
        proc.stop()


def worker(database_url: str, smtp_url: str, log: Path, **settings: Any) -> KirimProcess:
    """A started `kirim worker` process."""
    return KirimProcess(env_for(database_url, smtp_url, **settings), "worker", log=log).start()


def no_tracebacks(log_dir: Path) -> None:
    for log in log_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, f"{log.name}:\n{text[-3000:]}"

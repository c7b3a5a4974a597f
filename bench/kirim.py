"""A Kirim server of its own for each run: fresh database, key, ``kirim serve`` on loopback."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.procs import stop_process

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def kirim_command() -> list[str]:
    """The ``kirim`` console script of this interpreter's environment, else ``-m service``."""
    script = Path(sys.executable).with_name("kirim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service"]


def kirim_env(database_url: str, sink_port: int, extra: dict[str, str]) -> dict[str, str]:
    # Inherited KIRIM_* settings would make runs depend on the caller's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIRIM_")}
    # Run the working tree's code even if the installed package metadata is stale.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["KIRIM_DATABASE_URL"] = database_url
    env["KIRIM_SMTP_URL"] = f"smtp://127.0.0.1:{sink_port}?tls=none"
    env.update(extra)
    return env


class PostgresDatabase:
    """A throw-away database on a local PostgreSQL server, dropped afterwards."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"kirim_bench_{secrets.token_hex(4)}"
        self.created = False

    @property
    def url(self) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{self.name}"

    async def _execute(self, statement: str) -> None:
        import asyncpg  # only needed for --database postgresql

        connection = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def create(self) -> None:
        await self._execute(f'CREATE DATABASE "{self.name}"')
        self.created = True

    async def drop(self) -> None:
        if self.created:
            await self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.created = False


class KirimServer:
    def __init__(self, sink_port: int, port: int, database: str, postgres_admin_url: str,
                 extra_env: dict[str, str]) -> None:  # fmt: skip
        self.sink_port = sink_port
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="kirim-bench-"))
        self.postgres = PostgresDatabase(postgres_admin_url) if database == "postgresql" else None
        self.extra_env = extra_env
        self.api_key = ""
        self._process: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def _env(self) -> dict[str, str]:
        url = self.postgres.url if self.postgres else f"sqlite:///{self.root}/kirim.db"
        return kirim_env(url, self.sink_port, self.extra_env)

    async def _run(self, *args: str, deadline_seconds: float = 120.0) -> str:
        process = await asyncio.create_subprocess_exec(
            *kirim_command(), *args,
            env=self._env(), cwd=self.root,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), deadline_seconds)
        except TimeoutError:
            await stop_process(process)
            raise RuntimeError(f"kirim {' '.join(args)} did not finish") from None
        if process.returncode != 0:
            raise RuntimeError(f"kirim {' '.join(args)} failed: {err.decode()[-2000:]}")
        return out.decode()

    async def start(self, ready_seconds: float = 60.0) -> None:
        if self.postgres is not None:
            await self.postgres.create()
        await self._run("migrate")
        words = (await self._run("keys", "create", "--name", "bench")).split()
        if not words:
            raise RuntimeError("kirim keys create printed no key")
        self.api_key = words[-1]
        log = (self.root / "serve.log").open("wb")
        self._process = await asyncio.create_subprocess_exec(
            *kirim_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
            env=self._env(), cwd=self.root,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        await self._wait_healthy(ready_seconds)

    async def _wait_healthy(self, ready_seconds: float) -> None:
        deadline = time.monotonic() + ready_seconds
        async with httpx.AsyncClient(base_url=self.base_url, trust_env=False) as http:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.returncode is not None:
                    break
                try:
                    if (await http.get("/healthz", timeout=2)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"kirim serve did not become healthy:\n{self.log_tail()}")

    def log_tail(self, size: int = 3000) -> str:
        log = self.root / "serve.log"
        return log.read_text(errors="replace")[-size:] if log.exists() else ""

    async def stop(self) -> None:
        if self._process is not None:
            await stop_process(self._process, grace=10)
            self._process = None
        if self.postgres is not None:
            await self.postgres.drop()
        shutil.rmtree(self.root, ignore_errors=True)

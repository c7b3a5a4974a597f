"""A Kirim server of its own for each run: fresh database, key, ``kirim serve`` on loopback
(or the processes of a scale-out layout)."""

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

from bench.layout import SERVE, Layout
from bench.procs import free_port, stop_process

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def kirim_command() -> list[str]:
    """The ``kirim`` console script of this interpreter's environment, else ``-m service``."""
    script = Path(sys.executable).with_name("kirim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service"]


def kirim_env(database_url: str, sink_port: int, extra: dict[str, str]) -> dict[str, str]:
    # Inherited KIRIM_* settings would make runs depend on the caller's shell; the switch
    # between compiled and source modules is the caller's to give.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIRIM_") or k == "KIRIM_NATIVE"}
    # Run the working tree's code even if the installed package metadata is stale.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["KIRIM_DATABASE_URL"] = database_url
    env["KIRIM_SMTP_URL"] = f"smtp://127.0.0.1:{sink_port}?tls=none"
    env.update(extra)
    return env


async def run_kirim(env: dict[str, str], cwd: Path, *args: str, deadline: float = 120.0) -> str:
    """Run one ``kirim`` command to completion; its stdout, or RuntimeError."""
    process = await asyncio.create_subprocess_exec(
        *kirim_command(), *args,
        env=env, cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), deadline)
    except TimeoutError:
        raise RuntimeError(f"kirim {' '.join(args)} did not finish") from None
    finally:
        await stop_process(process)
    if process.returncode != 0:
        raise RuntimeError(f"kirim {' '.join(args)} failed: {err.decode()[-2000:]}")
    return out.decode()


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

    async def create(self, template: str | None = None) -> None:
        if template is None:
            await self._execute(f'CREATE DATABASE "{self.name}"')
        else:
            # FILE_COPY checkpoints around the copy, so the run does not inherit its WAL.
            await self._execute(
                f'CREATE DATABASE "{self.name}" TEMPLATE "{template}" STRATEGY FILE_COPY'
            )
        self.created = True

    async def drop(self) -> None:
        if self.created:
            await self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.created = False


class KirimServer:
    """The Kirim processes of one run, on a database of their own.

    With the default layout one ``kirim serve`` (API plus its delivery children); with a
    scale-out layout, ``layout.apis`` ``kirim serve --no-workers`` on ports of their own
    and ``layout.workers`` ``kirim worker``, all on the same PostgreSQL database."""

    def __init__(self, sink_port: int, port: int, database: str, postgres_admin_url: str,
                 extra_env: dict[str, str], seed: SeedDatabase | None = None,
                 layout: Layout = SERVE) -> None:  # fmt: skip
        if layout.scale_out and database != "postgresql":
            raise ValueError(f"layout {layout.name} needs PostgreSQL (processes share a database)")
        self.sink_port = sink_port
        self.layout = layout
        # The first API process listens on ``port``; any others on free ports.
        self.ports = [port, *(free_port() for _ in range(layout.apis - 1))]
        self.root = Path(tempfile.mkdtemp(prefix="kirim-bench-"))
        self.postgres = PostgresDatabase(postgres_admin_url) if database == "postgresql" else None
        self.extra_env = extra_env
        # A preloaded database to start from (copied, so the seed stays as it was).
        self.seed = seed
        self.api_key = ""
        self._apis: list[asyncio.subprocess.Process] = []
        self._workers: list[asyncio.subprocess.Process] = []
        self._ready_fds: list[int] = []  # read ends of the workers' "delivering" pipes
        self._logs: list[Path] = []

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def base_url(self) -> str:
        return self.base_urls[0]

    @property
    def base_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def api_pids(self) -> list[int]:
        return [process.pid for process in self._apis]

    @property
    def worker_pids(self) -> list[int]:
        return [process.pid for process in self._workers]

    @property
    def pids(self) -> list[int]:
        """The root of every Kirim process tree of the layout."""
        return self.api_pids + self.worker_pids

    def _env(self) -> dict[str, str]:
        url = self.postgres.url if self.postgres else f"sqlite:///{self.root}/kirim.db"
        return kirim_env(url, self.sink_port, self.extra_env)

    async def _run(self, *args: str, deadline_seconds: float = 120.0) -> str:
        return await run_kirim(self._env(), self.root, *args, deadline=deadline_seconds)

    async def start(self, ready_seconds: float = 60.0) -> None:
        await self.launch()
        await self.wait_ready(ready_seconds)

    async def launch(self) -> None:
        """Database (fresh, or a copy of the seed's), migration, key, then the processes."""
        if self.postgres is not None:
            template = self.seed.postgres if self.seed is not None else None
            await self.postgres.create(template.name if template is not None else None)
        elif self.seed is not None:
            await asyncio.to_thread(self.seed.copy_sqlite, self.root / "kirim.db")
        await self._run("migrate")
        words = (await self._run("keys", "create", "--name", "bench")).split()
        if not words:
            raise RuntimeError("kirim keys create printed no key")
        self.api_key = words[-1]
        if not self.layout.scale_out:
            await self._spawn("serve.log", "serve", "--host", "127.0.0.1", "--port", str(self.port))
            return
        for number in range(1, self.layout.workers + 1):
            # The pipe ``kirim serve`` gives its own children: a byte once the loop delivers.
            read_fd, write_fd = os.pipe()
            self._ready_fds.append(read_fd)
            try:
                await self._spawn(f"worker{number}.log", "worker", "--ready-fd", str(write_fd),
                                  pass_fds=(write_fd,))  # fmt: skip
            finally:
                os.close(write_fd)
        for number, port in enumerate(self.ports, 1):
            await self._spawn(f"api{number}.log", "serve", "--no-workers",
                              "--host", "127.0.0.1", "--port", str(port))  # fmt: skip

    async def _spawn(self, log_name: str, *args: str, pass_fds: tuple[int, ...] = ()) -> None:
        path = self.root / log_name
        self._logs.append(path)
        with path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *kirim_command(), *args,
                env=self._env(), cwd=self.root,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, pass_fds=pass_fds,
            )  # fmt: skip
        (self._workers if args[0] == "worker" else self._apis).append(process)

    async def wait_ready(self, ready_seconds: float = 60.0) -> None:
        deadline = time.monotonic() + ready_seconds
        for read_fd in self._ready_fds:
            if not await _read_within(read_fd, deadline - time.monotonic()):
                raise RuntimeError(f"a kirim worker did not start delivering:\n{self.log_tail()}")
        for port, process in zip(self.ports, self._apis, strict=True):
            await self._wait_healthy(port, process, deadline)

    async def _wait_healthy(
        self, port: int, process: asyncio.subprocess.Process, deadline: float
    ) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            while time.monotonic() < deadline:
                if process.returncode is not None:
                    break
                try:
                    if (await http.get("/healthz", timeout=2)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"kirim serve did not become healthy:\n{self.log_tail()}")

    def log_tail(self, size: int = 3000) -> str:
        """The end of each process's log (one process: its log alone, as before)."""
        tails = []
        for log in self._logs:
            text = log.read_text(errors="replace")[-size:] if log.exists() else ""
            tails.append(text if len(self._logs) == 1 else f"--- {log.name} ---\n{text}")
        return "\n".join(tails)

    async def stop(self) -> None:
        processes, self._apis, self._workers = self._apis + self._workers, [], []
        await asyncio.gather(*(stop_process(process, grace=10) for process in processes))
        for read_fd in self._ready_fds:
            os.close(read_fd)
        self._ready_fds = []
        if self.postgres is not None:
            await self.postgres.drop()
        shutil.rmtree(self.root, ignore_errors=True)


async def _read_within(fd: int, seconds: float) -> bytes:
    """A byte from a pipe, or b"" when the writer closed it unsaid or ``seconds`` passed."""
    loop = asyncio.get_running_loop()
    said: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        if not said.done():
            said.set_result(os.read(fd, 1))

    loop.add_reader(fd, readable)
    try:
        return await asyncio.wait_for(said, max(0.0, seconds))
    except TimeoutError:
        return b""
    finally:
        loop.remove_reader(fd)


class SeedDatabase:
    """A database migrated and preloaded once; every run that starts from it gets a copy.

    On SQLite a file copied (and synced, so no write-back of it overlaps the measured run),
    on PostgreSQL a database created from it as a template."""

    def __init__(self, database: str, postgres_admin_url: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kirim-bench-seed-"))
        self.postgres = PostgresDatabase(postgres_admin_url) if database == "postgresql" else None
        self.count = 0
        self.seconds = 0.0  # how long the preload took
        self.size_bytes = 0

    @property
    def url(self) -> str:
        return self.postgres.url if self.postgres else f"sqlite:///{self.root}/kirim.db"

    async def fill(self, count: int, days: float) -> None:
        """Migrate, then write ``count`` delivered messages (``python -m bench.preload``)."""
        if self.postgres is not None:
            await self.postgres.create()
        env = kirim_env(self.url, 0, {})
        await run_kirim(env, self.root, "migrate")
        began = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.preload", "--database-url", self.url,
            "--count", str(count), "--days", str(days),
            env=env, cwd=REPO_ROOT, stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            code = await process.wait()
        finally:
            await stop_process(process)
        if code != 0:
            raise RuntimeError(f"preload failed with exit code {code}")
        self.seconds = time.monotonic() - began
        self.count = count
        self.size_bytes = await self._size()

    async def _size(self) -> int:
        if self.postgres is None:
            return (self.root / "kirim.db").stat().st_size
        import asyncpg

        connection = await asyncpg.connect(self.postgres.admin_url, timeout=10)
        try:
            size = await connection.fetchval("SELECT pg_database_size($1)", self.postgres.name)
        finally:
            await connection.close()
        return int(size)

    def copy_sqlite(self, target: Path) -> None:
        shutil.copyfile(self.root / "kirim.db", target)
        descriptor = os.open(target, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    async def remove(self) -> None:
        if self.postgres is not None:
            await self.postgres.drop()
        shutil.rmtree(self.root, ignore_errors=True)

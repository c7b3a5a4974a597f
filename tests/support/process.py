"""Running `kirim` as a real subprocess, the way an operator does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


# Several tests run at once, each with a few processes (`kirim serve` is two): small pools
# keep them all within PostgreSQL's 100 connections. A test may ask for more.
SMALL_POOLS = {"database_pool_size": 4, "database_max_overflow": 4}


def kirim_env(**settings: Any) -> dict[str, str]:
    settings = {**SMALL_POOLS, **settings}
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIRIM_")}
    env["PYTHONUNBUFFERED"] = "1"
    for k, v in settings.items():
        env[f"KIRIM_{k.upper()}"] = str(v)
    return env


def kirim_cli(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return out.stdout


class KirimProcess:
    """`kirim serve` (or `worker`) in a subprocess; stopped by PID only."""

    def __init__(self, env: dict[str, str], *args: str, log: Path, port: int | None = None) -> None:
        self.env = env
        self.args = args or ("serve",)
        self.port = port or free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, *, wait: bool = True) -> KirimProcess:
        cmd = [sys.executable, "-m", "service", *self.args]
        if self.args[0] == "serve":
            cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=fh, stderr=fh)
        if wait and self.args[0] == "serve":
            try:
                self.wait_ready()
            except BaseException:
                # Never leave a straggler that would keep working on the next test's database.
                self.kill9()
                raise
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        # Generous: on a loaded two-core runner a start has taken several seconds; a slow
        # start is not what these tests check. A failure says what /readyz last answered and
        # what state the processes were in, so a hang can be told from a slow machine.
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"kirim exited early:\n{self.log.read_text()[-3000:]}")
            try:
                r = httpx.get(self.base_url + "/readyz", timeout=2, trust_env=False)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:300]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise RuntimeError(
            f"kirim not ready after {timeout} s; /readyz last: {last}\n"
            f"{process_states(self.pid)}\n{self.log.read_text()[-3000:]}"
        )

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def __enter__(self) -> KirimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def process_states(pid: int) -> str:
    """``pid`` and its children: state and kernel wait channel, with the load average."""
    lines = [f"loadavg {Path('/proc/loadavg').read_text().strip()}"]
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid):
            pids.append(int(stat.parent.name))
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            wchan = Path(f"/proc/{p}/wchan").read_text()
        except OSError:
            continue
        # state, then user and system CPU in clock ticks
        lines.append(f"pid {p}: state {fields[0]} utime {fields[11]} stime {fields[12]} {wchan}")
        lines.append(_stacks(p))
    return "\n".join(lines)


def _stacks(pid: int) -> str:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return ""
    try:
        out = subprocess.run(
            [str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "py-spy dump timed out"
    return (out.stdout + out.stderr)[-4000:]

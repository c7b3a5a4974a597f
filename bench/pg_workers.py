"""Throughput on PostgreSQL with 1, 2 and 4 `kirim worker` processes, in one run.

For each worker count: a fresh database, two `kirim serve --no-workers` processes, the
workers, and Postfix's `smtp-sink` as the receiving server. N messages are POSTed
concurrently; the figure is messages per second from the first POST to the last SMTP 250,
with the CPU seconds each kind of process used per message (what limits it).

    .venv/bin/python -m bench.pg_workers [--messages 3000] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from tests.scaleout.cluster import SmtpSink, fresh_pg, post_load, wait_until
from tests.support.process import KirimProcess, kirim_cli, kirim_env


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(workers: int, messages: int, logs: Path) -> dict[str, float]:
    with fresh_pg() as url, SmtpSink() as sink:
        env = kirim_env(database_url=url, smtp_url=sink.url, log_level="WARNING")
        key = kirim_cli(env, "keys", "create", "--name", "bench").strip()
        apis = [
            KirimProcess(env, "serve", "--no-workers", log=logs / f"w{workers}-api{i}.log")
            for i in range(2)
        ]
        procs = [
            KirimProcess(env, "worker", log=logs / f"w{workers}-{i}.log") for i in range(workers)
        ]
        try:
            for p in apis + procs:
                p.start(wait=False)
            for p in apis:
                p.wait_ready(timeout=120)
            time.sleep(1.0)
            pids = {"api": [a.proc.pid for a in apis], "worker": [w.proc.pid for w in procs]}  # type: ignore[union-attr]
            before = {k: sum(_cpu_seconds(p) for p in v) for k, v in pids.items()}
            started = time.monotonic()
            names = [f"b{i}@example.com" for i in range(messages)]
            posted = asyncio.run(post_load([a.base_url for a in apis], key, names))
            accept_rate = len(posted.accepted) / posted.seconds
            wait_until(lambda: sink.total() >= messages, timeout=900, what="deliveries", step=0.05)
            elapsed = time.monotonic() - started
            after = {k: sum(_cpu_seconds(p) for p in v) for k, v in pids.items()}
        finally:
            for p in procs + apis:
                p.stop()
    return {
        "workers": workers,
        "rate": messages / elapsed,
        "accepts": accept_rate,
        "api_ms": (after["api"] - before["api"]) * 1000 / messages,
        "worker_ms": (after["worker"] - before["worker"]) * 1000 / messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="kirim-bench-pg-"))
    print(f"load average before: {os.getloadavg()[0]:.2f}; logs in {logs}")
    print("workers  POST->250 msg/s  accepts/s  API CPU ms/msg  worker CPU ms/msg")
    for count in (int(w) for w in args.workers.split(",")):
        r = run_one(count, args.messages, logs)
        print(
            f"{count:>7}  {r['rate']:>15.0f}  {r['accepts']:>9.0f}  "
            f"{r['api_ms']:>14.2f}  {r['worker_ms']:>17.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

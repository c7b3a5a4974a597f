"""``python -m bench``: Postfix and Kirim relaying to the same kind of sink, side by side."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import scenarios
from bench.install import ensure_postfix
from bench.kirim import DEFAULT_POSTGRES_ADMIN_URL
from bench.report import Result, render_markdown, render_text

METHOD = """
Run `python -m bench [--messages N] [--concurrency 64] [--mode single|batch|idle|all]
[--database sqlite|postgresql] [--markdown docs/benchmarks.md]` as root (it installs Debian's
`postfix` package for `smtp-sink` if missing, with service starts blocked). This page is
written by that command; rerun it rather than editing the numbers.

Each row is a separate run on loopback (127.0.0.1) with a fresh receiving server, Postfix's
`smtp-sink`, whose running counter (`-c`) timestamps every message it receives. Both systems
relay every message to it; neither the load generator nor the sink is counted as cost.

- **postfix throughput**: a private Postfix instance (own `main.cf`/`master.cf`, queue and log
  in a temp dir, loopback only, `relayhost` = the sink, concurrency and process limits at
  their defaults), fed by `smtp-source` with one message per SMTP session.
- **kirim single**: `kirim serve` (API and in-process workers) with a fresh database; one
  `POST /v1/messages` per message from keep-alive HTTP/1.1 connections (httpx).
- **kirim batch**: the same through `POST /v1/messages/batch`, 500 messages per request.
- **idle**: a paced trickle (10 messages/s for 20 s); latency is from submission start (SMTP
  session or POST) to the sink's receipt.

Columns: *msgs/s* is delivered messages divided by the time from the first submission to the
sink's receipt of the last one. *accepts/s* is Kirim's 202 responses per second of load.
*p50/p99* under load: for Postfix its own `delay=` (receipt to delivery) from its log, for
Kirim `created_at` to sent time from `GET /v1/messages/{id}` for a random sample. *CPU ms/msg*
is user+system time of the whole process tree (Postfix's master and every daemon it forks,
including exited ones through their parent's reaped-children time; Kirim's server process
and anything it forks), from the first submission until the tree goes quiet after the last
delivery, divided by the messages delivered. *peak MB* is the highest sum of PSS over the
tree, sampled four times a second (PSS shares common pages fairly among Postfix's many
processes).
"""

Run = Callable[[], Awaitable[Result | None]]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--mode", choices=("single", "batch", "idle", "all"), default="all")
    parser.add_argument("--system", choices=("postfix", "kirim", "both"), default="both")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_ADMIN_URL,
                        help="server where a throw-away database is created")  # fmt: skip
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--kirim-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra KIRIM_* setting for the server (repeatable)")  # fmt: skip
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="also write the results and machine description here")  # fmt: skip
    args = parser.parse_args(argv)
    if args.messages < 1 or args.concurrency < 1:
        parser.error("--messages and --concurrency must be positive")
    return args


def _kirim(options: scenarios.Options, mode: str) -> Run:
    return lambda: scenarios.kirim_run(options, mode)


def plan(args: argparse.Namespace, options: scenarios.Options) -> list[tuple[str, Run]]:
    modes = ("single", "batch", "idle") if args.mode == "all" else (args.mode,)
    runs: list[tuple[str, Run]] = []
    if args.system in ("postfix", "both"):
        if set(modes) & {"single", "batch"}:
            runs.append(("postfix throughput", lambda: scenarios.postfix_throughput(options)))
        if "idle" in modes:
            runs.append(("postfix idle", lambda: scenarios.postfix_idle(options)))
    if args.system in ("kirim", "both"):
        for mode in modes:
            runs.append((f"kirim {mode}", _kirim(options, mode)))
    return runs


async def run_all(runs: list[tuple[str, Run]]) -> list[Result]:
    results: list[Result] = []
    for name, run in runs:
        print(f"running {name} ...", flush=True)
        began = time.monotonic()
        try:
            result = await run()
        except (RuntimeError, OSError, TimeoutError) as error:
            print(f"{name} failed: {error}", file=sys.stderr, flush=True)
            continue
        if result is not None:
            results.append(result)
            print(f"  done in {time.monotonic() - began:.1f} s", flush=True)
    return results


async def main_async(args: argparse.Namespace) -> int:
    # SIGTERM gets the same orderly cleanup as Ctrl-C: cancel, then every finally runs.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await asyncio.to_thread(ensure_postfix)
    options = scenarios.Options(
        messages=args.messages,
        concurrency=args.concurrency,
        database=args.database,
        postgres_admin_url=args.postgres_url,
        kirim_env=dict(item.split("=", 1) for item in args.kirim_env),
        idle_seconds=args.idle_seconds,
    )
    results = await run_all(plan(args, options))
    if not results:
        print("no results", file=sys.stderr)
        return 1
    print()
    print(render_text(results))
    if args.markdown is not None:
        command = shlex.join(["python", "-m", "bench", *sys.argv[1:]])
        args.markdown.write_text(render_markdown(results, command, METHOD))
        print(f"\nwrote {args.markdown}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        return asyncio.run(main_async(args))
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())

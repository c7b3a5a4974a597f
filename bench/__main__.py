"""``python -m bench``: Postfix and Kirim relaying to the same kind of sink, side by side."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from bench import scenarios
from bench.install import ensure_postfix
from bench.kirim import DEFAULT_POSTGRES_ADMIN_URL, REPO_ROOT, SeedDatabase
from bench.layout import parse_layout
from bench.report import (
    Result,
    growth_section,
    machine,
    render_growth_markdown,
    render_growth_text,
    render_markdown,
    render_text,
    speed_check,
    with_growth,
)
from bench.scenarios import MB

METHOD = """
Run `python -m bench [--messages N] [--concurrency 64] [--mode single|batch|idle|all]
[--rounds N] [--database sqlite|postgresql] [--layout serve|NxM]
[--markdown docs/benchmarks.md]` as root
(it installs Debian's `postfix` package for `smtp-sink` if missing, with service starts
blocked). This page is written by that command; rerun it rather than editing the numbers.

Each row is a separate run on loopback (127.0.0.1) with a fresh receiving server, Postfix's
`smtp-sink`, whose running counter (`-c`) timestamps every message it receives. Both systems
relay every message to it; neither the load generator nor the sink is counted as cost.
Both share the two cores with the system measured, so both are kept lean: the load
generator (this command's own process) runs on uvloop, builds every request before the clock
starts, and samples memory twice a second, walking only the measured process tree.

- **postfix throughput**: a private Postfix instance (own `main.cf`/`master.cf`, queue and log
  in a temp dir, loopback only, `relayhost` = the sink, concurrency and process limits at
  their defaults), fed by `smtp-source` with one message per SMTP session.
- **kirim single**: `kirim serve` (its default layout: an API process, which also delivers
  while it serves no request and mail waits, and a delivery process) with a fresh database;
  one `POST /v1/messages` per message from keep-alive HTTP/1.1 connections (a lean client
  writing prepared requests, `bench/raw_http.py`: a general-purpose Python client costs
  about as much CPU per request as the server).
- **kirim batch**: the same through `POST /v1/messages/batch`, 500 messages per request,
  from the same lean client.
- **layout** (`--layout NxM`, PostgreSQL only; the mode then reads e.g. "single, 2 API + 2
  worker"): instead of `kirim serve`, N `kirim serve --no-workers` API processes on ports of
  their own and M `kirim worker` processes, all on the same database. The load's keep-alive
  connections (and batch senders) are dealt evenly over the API ports; CPU and peak MB are
  summed over every Kirim process of the layout.
- **idle**: a paced trickle (10 messages/s for 20 s); latency is from submission start (SMTP
  session or POST) to the sink's receipt. Postfix's submissions come from aiosmtplib, one SMTP
  session each; Kirim's from the lean HTTP client over keep-alive connections (through a
  general-purpose client each POST would carry about 4 ms of the client's own time here).

The host's cores are shared with other guests, and its speed swings within seconds (the
same Python loop takes from about 300 to 650 ms): *host ms* is that loop's time (the
speed check) taken just before each run. With `--rounds N` the whole plan runs N times,
interleaved; each Kirim row is paired with the Postfix row of its own round, and the median
of those ratios over the rounds is given last, so one run caught by a swing cannot move it.

Columns: *msgs/s* is delivered messages divided by the time from the first submission to the
sink's receipt of the last one. *accepts/s* is Kirim's 202 responses per second of load.
*p50/p99* under load: for Postfix its own `delay=` (receipt to delivery) from its log, for
Kirim `created_at` to sent time from `GET /v1/messages/{id}` for a random sample. *CPU ms/msg*
is user+system time of the whole process tree (Postfix's master and every daemon it forks,
including exited ones through their parent's reaped-children time; Kirim's server process
and anything it forks, or every process of a layout), from the first submission until the
tree goes quiet after the last delivery, divided by the messages delivered. *peak MB* is the
highest sum of PSS over the tree, sampled twice a second (PSS shares common pages fairly
among Postfix's many processes). On PostgreSQL the database server's own processes are
counted in neither.
"""

GROWTH_METHOD = """
Issue 8 asks that, with 1,000,000 messages already stored, accept and delivery rates drop by
less than 20 % and `kirim serve` stays under 300 MB. `python -m bench --mode growth
[--preload N] [--messages M] [--database sqlite|postgresql] [--markdown docs/benchmarks.md]`
measures it in one command and rewrites only this section of the page.

First it fills one database with N messages of history (not timed, reported below): the
service's own rows (`build_mime`, `submission.record`, the values a settle writes) moved to
the state delivery leaves them in, written with executemany/COPY oldest first. created_at is
spread evenly over the past 10 days; most messages belong to the load's tenant, the rest to
four others; recipients are drawn from 200,000 distinct addresses on 500 domains, one message
in ten has a second (cc) recipient. Each recipient is sent (1 % hard-bounced, with the address
suppressed), with one attempt, a queued and a final event; bodies older than the body
retention (7 days) are already cleared, as retention would have done. SQLite gets no ANALYZE
(Kirim never runs it); PostgreSQL gets a VACUUM ANALYZE, as autovacuum would have done.

Then, back to back, the single-POST and the batch runs described above, each first on an
empty database and then on a copy of the preloaded one (a synced file copy on SQLite, a
template copy on PostgreSQL), each with its own `kirim serve` (API and delivery process)
and sink. *already stored* is the messages in the database when the run began. *peak MB*
here is the highest PSS of the `kirim serve` tree from its start to its stop (startup, load,
deliveries and the status reads that sample latency). The ratios are the preloaded run over
the empty run of the same mode; the machine is shared, so single runs are noisy.
"""

Run = Callable[[], Awaitable[Result | None]]
Planned = tuple[str, Run, int]  # name, run, round


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--mode", choices=("single", "batch", "idle", "all", "growth"),
                        default="all",
                        help="growth: single and batch, empty then preloaded database")  # fmt: skip
    parser.add_argument("--preload", type=int, metavar="N",
                        help="Kirim runs start with N delivered messages already stored "
                             "(growth: 1,000,000 unless given)")  # fmt: skip
    parser.add_argument("--preload-days", type=float, default=10.0,
                        help="created_at of stored messages spread over these days")  # fmt: skip
    parser.add_argument("--system", choices=("postfix", "kirim", "both"), default="both")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--layout", default="serve", metavar="serve|NxM",
                        help="Kirim's processes: `kirim serve` (default), or N API-only "
                             "and M worker-only ones on one PostgreSQL database (2x2)")  # fmt: skip
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_ADMIN_URL,
                        help="server where a throw-away database is created")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the plan this many times, interleaved; ratios pair runs "
                             "of the same round and add the median over rounds")  # fmt: skip
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--kirim-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra KIRIM_* setting for the server (repeatable)")  # fmt: skip
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="also write the results and machine description here")  # fmt: skip
    args = parser.parse_args(argv)
    if args.messages < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--messages, --concurrency and --rounds must be positive")
    if args.rounds > 1 and args.mode == "growth":
        parser.error("--rounds is for the side-by-side modes; growth pairs its runs itself")
    if args.mode == "growth" and args.preload is None:
        args.preload = 1_000_000
    if args.preload is not None and args.preload < 1:
        parser.error("--preload must be positive")
    if args.preload and args.mode != "growth" and args.markdown is not None:
        parser.error("--markdown with --preload is for --mode growth (its own section)")
    try:
        args.layout = parse_layout(args.layout)
    except ValueError as error:
        parser.error(f"--layout: {error}")
    if args.layout.scale_out:
        if args.database != "postgresql":
            parser.error("--layout NxM needs --database postgresql (its processes share it)")
        if args.mode == "growth":
            parser.error("--mode growth measures `kirim serve`; it takes no --layout")
        if args.system == "postfix":
            parser.error("--layout is for Kirim's runs; --system postfix has none")
    return args


def _kirim(options: scenarios.Options, mode: str, seed: SeedDatabase | None = None) -> Run:
    return lambda: scenarios.kirim_run(options, mode, seed)


def plan(
    args: argparse.Namespace, options: scenarios.Options, seed: SeedDatabase | None = None
) -> list[Planned]:
    if args.mode == "growth":
        assert seed is not None
        # Each pair back to back, so both halves of a ratio see the same machine.
        return [
            (f"kirim {mode}{label}", _kirim(options, mode, s), 1)
            for mode in ("single", "batch")
            for label, s in (("", None), (f" with {args.preload:,} stored", seed))
        ]
    modes = ("single", "batch", "idle") if args.mode == "all" else (args.mode,)
    runs: list[tuple[str, Run]] = []
    if args.system in ("postfix", "both"):
        if set(modes) & {"single", "batch"}:
            runs.append(("postfix throughput", lambda: scenarios.postfix_throughput(options)))
        if "idle" in modes:
            runs.append(("postfix idle", lambda: scenarios.postfix_idle(options)))
    if args.system in ("kirim", "both"):
        layout = f", {args.layout.label}" if args.layout.scale_out else ""
        for mode in modes:
            runs.append((f"kirim {mode}{layout}", _kirim(options, mode, seed)))
    return [
        (name + (f" (round {n})" if args.rounds > 1 else ""), run, n)
        for n in range(1, args.rounds + 1)
        for name, run in runs
    ]


async def run_all(runs: list[Planned]) -> list[Result]:
    results: list[Result] = []
    for name, run, round_number in runs:
        print(f"running {name} ...", flush=True)
        # The host's speed swings within seconds; each row says where it stood.
        speed = await asyncio.to_thread(speed_check, 1)
        began = time.monotonic()
        try:
            result = await run()
        except (RuntimeError, OSError, TimeoutError) as error:
            print(f"{name} failed: {error}", file=sys.stderr, flush=True)
            continue
        if result is not None:
            result.round, result.speed_ms = round_number, speed
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
        layout=args.layout,
    )
    load_before = os.getloadavg()
    speed_before = await asyncio.to_thread(speed_check)
    # The code measured is the code at the start: the checkout may change during the run.
    info = machine()
    info["Kirim commit"] = info.get("Kirim commit", "unknown") + _uncommitted()
    seed = SeedDatabase(args.database, args.postgres_url) if args.preload else None
    try:
        if seed is not None:
            print(f"preloading {args.preload:,} messages ({args.database}) ...", flush=True)
            await seed.fill(args.preload, args.preload_days)
            print(f"  preloaded in {seed.seconds:.1f} s, {seed.size_bytes / MB:,.0f} MB",
                  flush=True)  # fmt: skip
        results = await run_all(plan(args, options, seed))
    finally:
        if seed is not None:
            await seed.remove()
    if not results:
        print("no results", file=sys.stderr)
        return 1
    speed = f"{speed_before:.0f} / {await asyncio.to_thread(speed_check):.0f}"
    print()
    print(f"host speed check (CPU ms of a fixed Python loop, lower is faster), before / after: "
          f"{speed}")  # fmt: skip
    command = shlex.join(["python", "-m", "bench", *sys.argv[1:]])
    if args.mode == "growth":
        assert seed is not None
        print(render_growth_text(results))
        if args.markdown is not None:
            facts = growth_facts(args, seed, load_before, info, speed)
            section = render_growth_markdown(results, command, GROWTH_METHOD, facts)
            page = args.markdown.read_text() if args.markdown.exists() else ""
            args.markdown.write_text(with_growth(page, section))
            print(f"\nwrote the growth section of {args.markdown}")
        return 0
    if seed is not None:
        print(f"(Kirim runs started with {seed.count:,} messages stored)")
    print(render_text(results))
    if args.markdown is not None:
        page = render_markdown(results, command, METHOD, {SPEED_LABEL: speed})
        # The growth section comes from its own command; keep it.
        old = growth_section(args.markdown.read_text()) if args.markdown.exists() else None
        args.markdown.write_text(page if old is None else with_growth(page, old))
        print(f"\nwrote {args.markdown}")
    return 0


SPEED_LABEL = "host speed check (CPU ms of a fixed Python loop, lower is faster), before / after"


def growth_facts(
    args: argparse.Namespace,
    seed: SeedDatabase,
    load_before: tuple[float, float, float],
    info: dict[str, str],
    speed: str,
) -> dict[str, str]:
    return {
        "database": args.database,
        "stored history": f"{seed.count:,} messages over {args.preload_days:g} days, "
        f"{seed.size_bytes / MB:,.0f} MB on disk",
        "preload time (not in the figures)": f"{seed.seconds:.0f} s",
        "load average (1 min) before / after": f"{load_before[0]:.1f} / {os.getloadavg()[0]:.1f}",
        "machine": f"{info['CPUs (nproc)']} CPUs, {info['CPU model']}, Python {info['Python']}, "
        f"SQLite {info['SQLite']}",
        "Kirim commit (at the start)": info["Kirim commit"],
        SPEED_LABEL: speed,
    }


def _uncommitted() -> str:
    """Say so when the measured code is not exactly the commit (a shared checkout)."""
    done = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "service", "bench"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return " plus uncommitted changes in service/ or bench/" if done.stdout.strip() else ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        # The load generator shares the cores with the system measured: uvloop (Kirim's
        # own loop, and a dependency) spends about half the CPU per request of asyncio's.
        return uvloop.run(main_async(args))
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())

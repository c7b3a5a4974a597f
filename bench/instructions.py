"""Instructions per message under callgrind: a measure the host's swings do not move.

End-to-end rates on a shared host swing by about ±10 % from run to run, so a change worth
2 % cannot be seen in them. Valgrind's callgrind counts the instructions a process runs,
which hardly depends on the host. For each source tree given, this runs one Kirim role
under callgrind twice, with a small and a large load, and divides the difference in
instructions by the difference in messages, so that start-up and shutdown cancel out:

- ``worker``: ``kirim worker`` delivers a backlog of single-recipient messages to
  ``smtp-sink`` (the backlog is accepted beforehand by an API process not under callgrind,
  with this tree's code, and copied for every run);
- ``api``: ``kirim serve --no-workers`` accepts single POSTs from 64 keep-alive
  connections (nothing delivers);
- ``batch``: the same API process accepts ``POST /v1/messages/batch`` requests of 500
  messages from 64 connections (the sizes should be multiples of 500).

    python -m bench.instructions --role worker --trees /tmp/base . [--small 500 --large 2500]

``--keep DIR`` keeps the callgrind outputs there, for ``callgrind_annotate``.

Each tree is run with this interpreter and environment, its own code first on the path (a
``git worktree`` of another commit will do). A run takes a minute or two: Python starts
about fifty times slower under callgrind. Valgrind comes from Debian's ``valgrind``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import load, raw_http
from bench.install import find_tool
from bench.kirim import kirim_env
from bench.procs import free_port

CONCURRENCY = 64
READY_SECONDS = 600.0  # imports under callgrind
DRAIN_SECONDS = 1800.0


def instructions(callgrind_out: Path) -> int:
    """The total instructions a callgrind output file records."""
    total = None
    for line in callgrind_out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            total = int(line.split()[1])
    if total is None:
        raise RuntimeError(f"no totals in {callgrind_out}")
    return total


def per_message(small: tuple[int, int], large: tuple[int, int]) -> float:
    """Instructions per message from (messages, instructions) of a small and a large run."""
    (n_small, i_small), (n_large, i_large) = small, large
    if n_large <= n_small:
        raise ValueError("the large run needs more messages than the small one")
    return (i_large - i_small) / (n_large - n_small)


class Tree:
    """One source tree's Kirim, on a database in a directory of its own."""

    def __init__(self, tree: Path, root: Path, smtp_port: int) -> None:
        self.tree = tree
        self.root = root
        # Everything runs about fifty times slower: no lease or SMTP timeout may expire.
        slow = {"KIRIM_LEASE_SECONDS": "3600", "KIRIM_SMTP_TIMEOUT_SCALE": "20"}
        self.env = kirim_env(f"sqlite:///{root}/kirim.db", smtp_port, slow)
        # This tree's code, not the one this command runs from.
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(tree), os.environ.get("PYTHONPATH")])
        )

    def command(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "service", *args],
            env=self.env, cwd=self.root, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"kirim {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start(self, args: list[str], callgrind_out: Path | None) -> subprocess.Popen[bytes]:
        prefix = []
        if callgrind_out is not None:
            valgrind = find_tool("valgrind")
            if valgrind is None:
                raise RuntimeError("valgrind not found (Debian package valgrind)")
            prefix = [valgrind, "--tool=callgrind", f"--callgrind-out-file={callgrind_out}"]
        with open(self.root / "kirim.log", "wb") as log:  # the child keeps its own copy
            return subprocess.Popen(
                [*prefix, sys.executable, "-m", "service", *args],
                env=self.env, cwd=self.root,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True,
            )  # fmt: skip

    def new_key(self) -> str:
        self.command("migrate")
        return self.command("keys", "create", "--name", "instructions").split()[-1]


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a deployment stops Kirim; callgrind writes its file on the way out."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def _ready(base: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{base} did not become ready")


async def _post(port: int, key: str, count: int, batch: bool) -> None:
    await _ready(f"http://127.0.0.1:{port}")
    if batch:
        outcome = await load.post_batches("127.0.0.1", [port], key, count, CONCURRENCY)
        if outcome is None:
            raise RuntimeError("this tree has no batch endpoint")
    else:
        outcome = await raw_http.post_singles(
            "127.0.0.1", [port], key, count, CONCURRENCY, load.message
        )
    if len(outcome.ids) != count:
        raise RuntimeError(f"{count - len(outcome.ids)} POSTs failed: {outcome.failures}")


def accept(tree: Tree, count: int, callgrind_out: Path | None, batch: bool = False) -> None:
    """``count`` messages POSTed to an API process of ``tree`` (under callgrind if given),
    one per request or 500 per batch."""
    key = tree.new_key()
    port = free_port()
    api = tree.start(["serve", "--no-workers", "--host", "127.0.0.1", "--port", str(port)],
                     callgrind_out)  # fmt: skip
    try:
        asyncio.run(_post(port, key, count, batch))
    finally:
        stop(api)


def backlog(tree: Path, count: int, into: Path) -> None:
    """A database file holding ``count`` accepted, undelivered messages."""
    with tempfile.TemporaryDirectory(prefix="kirim-instructions-") as root:
        kirim = Tree(tree, Path(root), smtp_port=9)
        accept(kirim, count, callgrind_out=None)
        with sqlite3.connect(Path(root) / "kirim.db") as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copy(Path(root) / "kirim.db", into)


def deliver(tree: Tree, count: int, callgrind_out: Path) -> None:
    """Run ``kirim worker`` of ``tree`` under callgrind until ``count`` recipients are sent."""
    worker = tree.start(["worker"], callgrind_out)
    sent = 0
    try:
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline and worker.poll() is None:
            time.sleep(1.0)
            with sqlite3.connect(tree.root / "kirim.db") as db:
                (sent,) = db.execute(
                    "SELECT count(*) FROM recipients WHERE status = 'sent'"
                ).fetchone()
            if sent >= count:
                return
        raise RuntimeError(f"the worker sent {sent} of {count}; see {tree.root / 'kirim.log'}")
    finally:
        stop(worker)


def sink(port: int) -> subprocess.Popen[bytes]:
    """``smtp-sink`` on loopback, answering every message with 250."""
    binary = find_tool("smtp-sink")
    if binary is None:
        raise RuntimeError("smtp-sink not found (Debian package postfix)")
    # As root smtp-sink insists on dropping privileges after binding.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    return subprocess.Popen(
        [binary, *user, f"127.0.0.1:{port}", "1024"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def run_once(role: str, tree: Path, root: Path, size: int, backlog_file: Path | None,
             out: Path) -> None:  # fmt: skip
    if role in ("api", "batch"):
        accept(Tree(tree, root, smtp_port=9), size, out, batch=role == "batch")  # nothing delivers
        return
    assert backlog_file is not None
    port = free_port()
    receiver = sink(port)
    try:
        shutil.copy(backlog_file, root / "kirim.db")
        deliver(Tree(tree, root, port), size, out)
    finally:
        receiver.kill()
        receiver.wait()


def measure(
    role: str, trees: list[Path], sizes: list[int], work: Path, keep: Path | None = None
) -> dict[Path, float]:
    backlogs: dict[int, Path] = {}
    if role == "worker":
        for size in sizes:
            backlogs[size] = work / f"backlog-{size}.db"
            backlog(trees[0], size, backlogs[size])
    counts: dict[Path, list[tuple[int, int]]] = {tree: [] for tree in trees}
    for size in sizes:
        for number, tree in enumerate(trees):
            root = work / f"run-{size}-{number}"
            root.mkdir()
            out = work / f"callgrind-{size}-{number}.out"
            run_once(role, tree, root, size, backlogs.get(size), out)
            counts[tree].append((size, instructions(out)))
            if keep is not None:  # for callgrind_annotate
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(out, keep / f"{role}-{size}-{number}.out")
            print(f"  {tree}: {size} messages, {counts[tree][-1][1]:,} instructions", flush=True)
            shutil.rmtree(root)
    return {tree: per_message(pairs[0], pairs[1]) for tree, pairs in counts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--role", choices=("worker", "api", "batch"), required=True)
    parser.add_argument("--trees", nargs="+", type=Path, default=[Path(".")])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=2500)
    parser.add_argument("--keep", type=Path, help="copy the callgrind outputs into this folder")
    args = parser.parse_args(argv)
    trees = [tree.resolve() for tree in args.trees]
    with tempfile.TemporaryDirectory(prefix="kirim-instructions-") as work:
        results = measure(args.role, trees, [args.small, args.large], Path(work), args.keep)
    first = results[trees[0]]
    for tree, value in results.items():
        change = f" ({(value - first) / first:+.1%} against the first)" if tree != trees[0] else ""
        print(f"{args.role} {tree}: {value / 1000:,.1f}k instructions per message{change}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

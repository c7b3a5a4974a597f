"""Processes the benchmark starts, and what a process tree costs, read from /proc.

CPU of a tree is the sum over its live members of utime+stime+cutime+cstime: a child that
exited and was reaped has its time folded into its parent's cutime/cstime, so work done by
short-lived helpers (Postfix forks and retires daemons) is still counted exactly once.
Memory is the sum of PSS, which shares pages between processes fairly instead of counting
a library once per process as RSS would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")
# One process tree, or several measured as one (a layout of separate Kirim processes).
Roots = int | Sequence[int]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces or parentheses; fields resume after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def parent_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
    return parents


def _root_list(roots: Roots) -> list[int]:
    return [roots] if isinstance(roots, int) else list(roots)


def tree_pids_by_parents(roots: Roots) -> list[int]:
    """``tree_pids`` from the parent of every process on the machine: reads all of /proc."""
    parents = parent_map()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    stack = [r for r in _root_list(roots) if r in parents][::-1]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def _children(pid: int) -> list[int] | None:
    """The children of every thread of ``pid`` (a child belongs to the thread that forked
    it), or None if ``pid`` is gone. A zombie still has its task directory, so it counts,
    as in ``parent_map``."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as file:
                found.extend(int(child) for child in file.read().split())
        except OSError:
            continue  # the thread exited meanwhile; its children moved to another one
    return found


# Kernels without CONFIG_PROC_CHILDREN have no such file: those walk all of /proc instead.
CHILDREN_FILES = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def tree_pids(roots: Roots) -> list[int]:
    """Every live process of the trees under ``roots`` (each root first of its tree). Read
    from the tree's own children files: a sample costs a few reads per process of the tree,
    not one per process on the machine."""
    if not CHILDREN_FILES:
        return tree_pids_by_parents(roots)
    found: list[int] = []
    for root in _root_list(roots):
        stack = [root]
        while stack:
            pid = stack.pop()
            children = _children(pid)
            if children is None:
                continue  # gone, a root too: it counts nothing
            found.append(pid)
            stack.extend(reversed(children))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # utime, stime, cutime, cstime are fields 14-17 of stat (1-based).
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


def pss_bytes(pid: int) -> int:
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_cpu_seconds(roots: Roots) -> float:
    return cpu_seconds(tree_pids(roots))


def tree_pss_bytes(roots: Roots) -> int:
    return sum(pss_bytes(pid) for pid in tree_pids(roots))


class PeakMemory:
    """Samples the PSS of a tree (or the sum over several) until stopped; keeps every
    sample, so the peak of any stretch of the run can be read afterwards. Twice a second,
    not more: for each sample the kernel walks the page tables of every process in the
    tree, CPU taken from the system measured."""

    def __init__(self, root: Roots, interval: float = 0.5) -> None:
        self.root = root
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (time.monotonic(), bytes)
        self._task: asyncio.Task[None] | None = None

    @property
    def peak(self) -> int:
        return self.peak_between()

    def peak_between(self, start: float | None = None, end: float | None = None) -> int:
        """The highest sample taken from ``start`` to ``end`` (monotonic times, inclusive)."""
        return max(
            (
                size
                for at, size in self.samples
                if (start is None or at >= start) and (end is None or at <= end)
            ),
            default=0,
        )

    def sample(self) -> int:
        size = tree_pss_bytes(self.root)
        self.samples.append((time.monotonic(), size))
        return size

    async def _run(self) -> None:
        while True:
            size = await asyncio.to_thread(tree_pss_bytes, self.root)
            self.samples.append((time.monotonic(), size))
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.sample()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> int:
        """Stop sampling (after one last sample); returns the peak of the whole run."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.sample()
        return self.peak


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not (PROC / str(pid)).exists():
            return True
        fields = _stat_fields(pid)
        if fields is not None and fields[0] == "Z":
            return True
        time.sleep(0.05)
    return False


def terminate_tree(root: int, timeout: float = 5.0) -> None:
    """SIGTERM a tree this program started, then SIGKILL whatever is left after timeout."""
    pids = tree_pids(root)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if all(wait_gone(pid, timeout) for pid in pids):
            return
        pids = [pid for pid in pids if (PROC / str(pid)).exists()]


async def stop_process(process: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """Stop a child we spawned (and anything it forked) and reap it."""
    if process.returncode is None:
        await asyncio.to_thread(terminate_tree, process.pid, grace)
    with contextlib.suppress(ProcessLookupError, TimeoutError):
        await asyncio.wait_for(process.wait(), grace)


async def wait_quiet(
    root: Roots, limit_seconds: float = 15.0, window: float = 0.5, busy_fraction: float = 0.05
) -> float:
    """Let a tree (or several) finish work that follows the last delivery (queue-file
    removal, status updates) and return its CPU seconds once it uses under
    ``busy_fraction`` of a core, or when ``limit_seconds`` have passed."""
    deadline = time.monotonic() + limit_seconds
    before = tree_cpu_seconds(root)
    while time.monotonic() < deadline:
        await asyncio.sleep(window)
        now = tree_cpu_seconds(root)
        if now - before < busy_fraction * window:
            return now
        before = now
    return before

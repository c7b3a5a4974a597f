"""`kirim serve`'s delivery workers as child processes, so the API and delivery each get a core.

One Python process runs on one core. ``kirim serve`` therefore keeps the HTTP API (and its
group commit) in its own process and starts ``kirim worker`` children beside it. The
parent restarts a child that dies (with backoff), stops them after the API has drained on
SIGTERM/SIGINT, and children end themselves if the parent is killed outright
(``PR_SET_PDEATHSIG``), so no orphan keeps delivering for a service that is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
RESTART_MIN = 1.0  # seconds before the first restart of a child that died
RESTART_MAX = 30.0
HEALTHY_AFTER = 60.0  # a child that ran this long restarts without backoff


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel for SIGTERM when the parent dies; False if it is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == parent_pid


class _Child:
    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.backoff = RESTART_MIN
        self.restart_at = 0.0
        self.ready_fd: int | None = None  # read end of the first start's "running" pipe


class WorkerChildren:
    """Starts ``count`` ``kirim worker`` processes and keeps them running until ``stop``."""

    def __init__(self, count: int, *, grace: float, command: Sequence[str] | None = None) -> None:
        self._children = [_Child(i) for i in range(count)]
        self._grace = grace
        self._command = list(command or [sys.executable, "-m", "service", "worker"])
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for child in self._children:
            self._spawn(child, report_ready=True)
        self._thread = threading.Thread(target=self._watch, name="worker-children", daemon=True)
        self._thread.start()

    def wait_running(self, limit: float) -> bool:
        """Wait until every first child runs its delivery loop (or died), at most ``limit`` s.

        ``kirim serve`` opens its port only then, so mail accepted by a service that says it
        is up is picked up at once rather than after the children's start-up.
        """
        pending = [c.ready_fd for c in self._children if c.ready_fd is not None]
        deadline = time.monotonic() + limit
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, _, _ = select.select(pending, [], [], left)
            for fd in readable:
                os.read(fd, 1)  # a byte: running; nothing: it exited first
                pending.remove(fd)
        for child in self._children:
            if child.ready_fd is not None:
                os.close(child.ready_fd)
                child.ready_fd = None
        return not pending

    def _spawn(self, child: _Child, *, report_ready: bool = False) -> None:
        cmd = [*self._command, "--parent-pid", str(os.getpid())]
        write_fd = None
        if report_ready:
            child.ready_fd, write_fd = os.pipe()
            cmd += ["--ready-fd", str(write_fd)]
        # Own session: a terminal's Ctrl-C reaches the parent only, which stops the children
        # after the API has drained instead of all at once.
        try:
            child.proc = subprocess.Popen(
                cmd, start_new_session=True, pass_fds=() if write_fd is None else (write_fd,)
            )
        finally:
            if write_fd is not None:
                os.close(write_fd)
        child.started = time.monotonic()
        log.info("delivery worker process %d started (pid %d)", child.slot, child.proc.pid)

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            with self._lock:
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                for child in self._children:
                    self._check(child, now)

    def _check(self, child: _Child, now: float) -> None:
        proc = child.proc
        if proc is not None:
            code = proc.poll()
            if code is None:
                return
            log.error(
                "delivery worker process %d (pid %d) exited with %s; restarting",
                child.slot,
                proc.pid,
                code,
            )
            child.proc = None
            if now - child.started >= HEALTHY_AFTER:
                child.backoff = RESTART_MIN
            child.restart_at = now + child.backoff
            child.backoff = min(child.backoff * 2, RESTART_MAX)
        if now >= child.restart_at:
            self._spawn(child)

    def stop(self) -> None:
        """SIGTERM every child, wait for it to drain (the grace), then SIGKILL what is left."""
        with self._lock:
            self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        live = [c.proc for c in self._children if c.proc is not None and c.proc.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace + 10
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("delivery worker pid %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait(5)

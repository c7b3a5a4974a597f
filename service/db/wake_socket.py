"""SQLite's stand-in for LISTEN/NOTIFY: Unix datagram sockets between processes on one host.

A SQLite database lives on one host, so every process that uses it can meet in one local
directory. Each process with a worker binds a datagram socket there; a process that has
committed an accept sends one byte to every socket it finds. A wake is only a hint: a lost,
late or forged datagram costs at most one poll interval, never correctness, since workers
still poll the queue.

The directory is derived from the database file's absolute path and kept short (Unix socket
paths are limited to 107 bytes), with mode 0700 so only this user's processes meet there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def wake_directory(database_path: str | Path, *, base: str | None = None) -> Path:
    """The meeting directory of every process using the SQLite file ``database_path``."""
    resolved = str(Path(database_path).resolve())
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:16]
    return Path(base or tempfile.gettempdir()) / f"kirim-wake-{os.getuid()}-{digest}"


def own_directory(path: Path) -> bool:
    """Create ``path`` if needed; True only if it is a private directory of ours."""
    with contextlib.suppress(OSError):
        path.mkdir(mode=0o700)
    try:
        st = path.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.getuid()
        and not stat.S_IMODE(st.st_mode) & 0o077
    )


QUEUE = b"q"  # an accept committed: recipients are due
HOOKS = b"h"  # a commit queued webhook deliveries


class WakeListener:
    """Binds this process's socket; each datagram calls ``on_queue`` or ``on_hooks``."""

    def __init__(
        self,
        directory: Path,
        on_queue: Callable[[], None],
        on_hooks: Callable[[], None] | None = None,
    ) -> None:
        self.directory = directory
        self._on_queue = on_queue
        self._on_hooks = on_hooks
        self._sock: socket.socket | None = None
        self.path: Path | None = None
        self.received = 0

    def start(self) -> bool:
        """Start listening; False (and polling only) if the directory cannot be used."""
        if not own_directory(self.directory):
            log.warning("wake directory %s is not private; workers will poll", self.directory)
            return False
        path = self.directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(path))
        except OSError as exc:
            sock.close()
            log.warning("cannot bind wake socket %s, workers will poll: %s", path, exc)
            return False
        sock.setblocking(False)
        self._sock, self.path = sock, path
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        # Anything committed before we were listening would otherwise wait for a poll.
        self._on_queue()
        return True

    def _readable(self) -> None:
        assert self._sock is not None
        kinds = set()
        while True:
            try:
                kinds.add(self._sock.recv(64))
            except OSError:  # BlockingIOError: drained
                break
            self.received += 1
        if QUEUE in kinds:
            self._on_queue()
        if HOOKS in kinds and self._on_hooks is not None:
            self._on_hooks()

    def close(self) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with contextlib.suppress(OSError):  # the last one out removes the directory
                self.directory.rmdir()


class WakePublisher:
    """Sends a one-byte wake to every listener in the directory (never blocks)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._targets: list[str] = []
        self._listing: int | None = None  # the directory's mtime when last listed
        self._listed_at = float("-inf")
        self.sent = 0
        self.own: Path | None = None  # this process's listener, woken directly instead

    def _scan(self) -> None:
        # A socket bound or removed changes the directory's mtime: list it again then, and
        # every second anyway (mtimes are coarse: two changes may share one).
        try:
            changed = os.stat(self.directory).st_mtime_ns
        except OSError:
            self._targets, self._listing = [], None
            return
        now = time.monotonic()
        if changed == self._listing and now - self._listed_at < 1.0:
            return
        self._listed_at = now
        try:
            names = os.listdir(self.directory)
        except OSError:
            self._targets, self._listing = [], None
            return
        self._listing = changed
        own = str(self.own) if self.own else None
        self._targets = [
            t for t in (str(self.directory / n) for n in names if n.endswith(".sock")) if t != own
        ]

    def notify(self, kind: bytes = QUEUE) -> None:
        self._scan()
        stale = []
        for target in self._targets:
            try:
                self._sock.sendto(kind, target)
                self.sent += 1
            except BlockingIOError:
                pass  # its queue is full of wakes already
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    stale.append(target)
        for target in stale:
            self._targets.remove(target)
            if os.path.exists(target):
                # Nobody is bound to it: a process that died without cleaning up.
                with contextlib.suppress(OSError):
                    os.unlink(target)

    def close(self) -> None:
        self._sock.close()


def directory_for_url(url: str) -> Path | None:
    """The wake directory for a ``sqlite:///file`` URL; None for memory or other databases."""
    if not url.startswith("sqlite") or ":///" not in url:
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return wake_directory(path)

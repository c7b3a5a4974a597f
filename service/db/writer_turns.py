"""Taking turns at SQLite's write lock between processes.

SQLite's lock is not a queue: a process that commits and begins again at once (a busy
delivery worker settling and claiming) gets the lock back before another process, retrying
every few milliseconds, ever sees it free; under load the API's accepts then starve into
503s. So a process that failed to get the lock says so in a small shared file, and a
process about to begin a write while someone else waits lets it go first (for a bounded
time, so a waiter that died cannot hold anyone up for long).

The file lives in the private per-database directory of the wake sockets. Each slot holds
a waiting process's pid and the CLOCK_MONOTONIC time it last tried, shared by every process
on the host; a slot not refreshed for ``STALE`` seconds is ignored.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import time
from pathlib import Path

from service.db.wake_socket import own_directory

SLOTS = 64
_SLOT = struct.Struct("<Id")  # pid, last try (time.monotonic)
_SIZE = SLOTS * _SLOT.size
_EMPTY = bytes(_SIZE)
STALE = 1.0  # seconds without a retry after which a waiter counts as gone


class WriterTurns:
    def __init__(self, path: Path, *, pid: int | None = None) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)
        self._pid = pid or os.getpid()
        self._offset = (self._pid % SLOTS) * _SLOT.size
        self._mine = False

    @classmethod
    def for_directory(cls, directory: Path | None) -> WriterTurns | None:
        """The turns of the database whose wake directory is ``directory``; None if unusable."""
        if directory is None or not own_directory(directory):
            return None
        try:
            return cls(directory / "writer-turns")
        except (OSError, ValueError):
            return None

    def waiting(self) -> None:
        """This process wants the write lock (call on every retry: it refreshes the claim)."""
        _SLOT.pack_into(self._map, self._offset, self._pid, time.monotonic())
        self._mine = True

    def done(self) -> None:
        if not self._mine:
            return
        self._mine = False
        pid, _ = _SLOT.unpack_from(self._map, self._offset)
        if pid == self._pid:  # another process may share the slot; leave its claim alone
            _SLOT.pack_into(self._map, self._offset, 0, 0.0)

    def others_waiting(self) -> bool:
        if self._map[:] == _EMPTY:  # the common case: one compare, no parsing
            return False
        now = time.monotonic()
        for pid, tried in _SLOT.iter_unpack(self._map):
            if pid and pid != self._pid and now - tried < STALE:
                return True
        return False

    def close(self) -> None:
        self.done()
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()

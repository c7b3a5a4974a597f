"""Log lines written to stderr once per event-loop step instead of once per record.

Under load a Kirim process logs a line per message accepted or sent, and a stream handler
makes each line a write() of its own. Here records made while an event loop runs in this
thread are kept until the loop's current step ends and then written together, so a group
commit of thirty accepts costs one write. Records made anywhere else (start-up, shutdown,
other threads) are written at once, after anything still waiting, and ``flush`` (which
logging calls at exit) writes whatever waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import TextIO


class GatheredStreamHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._waiting: list[str] = []
        # The loop a flush is scheduled on. Tracked rather than inferred from waiting
        # lines: lines left by a loop that ended before its flush ran must not stop the
        # next loop from scheduling one.
        self._flush_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (Handler.handle).
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._add(line)

    def write_line(self, line: str) -> None:
        """Write a line formatted without a record, as ``emit`` writes a record's."""
        self.write_lines([line])

    def write_lines(self, lines: list[str]) -> None:
        """``write_line`` for each of ``lines``, taking the lock once."""
        self.acquire()
        try:
            for line in lines:
                self._add(line + self.terminator)
        finally:
            self.release()

    def _add(self, line: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self._write([*self._take(), line])
            return
        if self._flush_on is not loop:
            loop.call_soon(self.flush)
            self._flush_on = loop
        self._waiting.append(line)

    def flush(self) -> None:
        self.acquire()
        try:
            self._flush_on = None
            self._write(self._take())
        finally:
            self.release()

    def _take(self) -> list[str]:
        lines, self._waiting = self._waiting, []
        return lines

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except Exception:
            # Like StreamHandler: a closed or broken stream must not break the caller.
            with contextlib.suppress(Exception):
                sys.stderr.write("--- logging error: could not write log lines ---\n")

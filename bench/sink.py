"""Postfix's ``smtp-sink`` as the receiving server, with a delivery clock.

``smtp-sink -c`` writes ``sess=N quit=N mesg=N`` followed by a carriage return each time a
message's final dot is received; reading that pipe gives the arrival time of every message
without any per-message file I/O in the sink."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time

from bench.install import find_tool
from bench.procs import stop_process

MESSAGE_COUNT = re.compile(rb"mesg=(\d+)")
BUSY_RECORDS = 4  # records in one read that mean the sink is under load
BUSY_PAUSE = 0.005  # seconds between reads then


class Sink:
    def __init__(self, port: int) -> None:
        self.port = port
        self.arrivals: list[float] = []  # time.monotonic() of each received message
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def count(self) -> int:
        return len(self.arrivals)

    async def start(self, wait_seconds: float = 10.0) -> None:
        binary = find_tool("smtp-sink")
        if binary is None:
            raise RuntimeError("smtp-sink not found")
        # As root smtp-sink insists on dropping privileges after binding.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self._process = await asyncio.create_subprocess_exec(
            binary, "-c", *user, "-m", "1024", f"127.0.0.1:{self.port}", "1024",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self._wait_listening(wait_seconds)

    async def _wait_listening(self, wait_seconds: float) -> None:
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise RuntimeError(f"smtp-sink did not listen on 127.0.0.1:{self.port}")

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        pending = b""
        while True:
            chunk = await self._process.stdout.read(65536)
            if not chunk:
                return
            now = time.monotonic()
            records = (pending + chunk).split(b"\r")
            pending = records.pop()
            for record in records:
                match = MESSAGE_COUNT.search(record)
                if match:
                    total = int(match.group(1))
                    self.arrivals.extend([now] * (total - len(self.arrivals)))
            self._changed.set()
            if len(records) >= BUSY_RECORDS:
                # Under load a read per message costs this process (which shares the cores
                # with the system measured) a wake-up each; a short pause lets records pile
                # up. Arrival times then err by at most the pause, which a throughput over
                # seconds does not see; a trickle (the idle runs) is still read at once.
                await asyncio.sleep(BUSY_PAUSE)

    async def wait_for(self, count: int, deadline: float) -> bool:
        """Wait until ``count`` messages arrived or ``deadline`` (monotonic) passes."""
        while self.count < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
        return True

    async def stop(self) -> None:
        if self._process is not None:
            await stop_process(self._process)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

"""Log lines reach stderr once per event-loop step, in order, and none are left behind."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import textwrap

import pytest

from service.log_output import GatheredStreamHandler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def _logger(stream: CountingStream) -> logging.Logger:
    log = logging.getLogger(f"test-gathered-{id(stream)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = GatheredStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers = [handler]
    return log


@pytest.mark.asyncio
async def test_lines_of_one_step_are_written_together_and_in_order() -> None:
    stream = CountingStream()
    log = _logger(stream)
    for i in range(30):
        log.info("accepted %d", i)
    assert stream.getvalue() == ""  # still this step
    await asyncio.sleep(0)
    assert stream.writes == 1
    assert stream.getvalue().splitlines() == [f"accepted {i}" for i in range(30)]
    log.info("next step")
    await asyncio.sleep(0)
    assert stream.writes == 2
    assert stream.getvalue().endswith("next step\n")


def test_outside_an_event_loop_a_line_is_written_at_once() -> None:
    stream = CountingStream()
    log = _logger(stream)
    log.info("starting")
    assert stream.getvalue() == "starting\n"


@pytest.mark.asyncio
async def test_flush_writes_what_waits_and_a_thread_line_follows_it() -> None:
    stream = CountingStream()
    log = _logger(stream)
    log.info("first")
    await asyncio.to_thread(log.info, "from a thread")  # written at once, after "first"
    assert stream.getvalue() == "first\nfrom a thread\n"
    log.info("last")
    log.handlers[0].flush()
    assert stream.getvalue().endswith("last\n")


def test_a_process_that_ends_inside_its_loop_loses_no_line() -> None:
    # logs.setup installs the handler; logging's exit hook flushes what the loop left.
    script = textwrap.dedent(
        """
        import asyncio, logging, sys
        from service import logs
        logs.setup("INFO")

        async def main():
            for i in range(5):
                logging.getLogger("kirim.test").info("line %d", i)
            sys.exit(0)  # before the loop's step ends

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if "kirim.test" in ln]
    assert [ln.rsplit(" ", 2)[-2:] for ln in lines] == [["line", str(i)] for i in range(5)]


def test_lines_left_by_a_loop_that_ended_are_written_by_the_next() -> None:
    stream = CountingStream()
    log = _logger(stream)

    def last_words() -> None:
        log.info("from the first loop")
        first.stop()  # the loop ends with this step: its scheduled flush never runs

    first = asyncio.new_event_loop()
    first.call_soon(last_words)
    first.run_forever()
    first.close()
    assert stream.getvalue() == ""

    async def next_loop() -> None:
        log.info("from the second loop")
        await asyncio.sleep(0)

    asyncio.run(next_loop())
    assert stream.getvalue() == "from the first loop\nfrom the second loop\n"

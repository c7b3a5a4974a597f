"""One function per measured run. Each starts its own sink and system under test, measures,
and stops everything it started, also when interrupted."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib

from bench import load, raw_http
from bench.install import find_tool
from bench.kirim import DEFAULT_POSTGRES_ADMIN_URL, KirimServer, SeedDatabase
from bench.layout import SERVE, Layout
from bench.postfix import PrivatePostfix
from bench.procs import PeakMemory, free_port, stop_process, tree_cpu_seconds, wait_quiet
from bench.report import Result, percentile
from bench.sink import Sink

MB = 1024 * 1024
STATUS_READERS = 16  # concurrent GETs that sample latency after a run


@dataclass
class Options:
    messages: int = 20_000
    concurrency: int = 64
    database: str = "sqlite"
    postgres_admin_url: str = DEFAULT_POSTGRES_ADMIN_URL
    kirim_env: dict[str, str] = field(default_factory=dict)
    idle_rate: float = 10.0
    idle_seconds: float = 20.0
    latency_sample: int = 2000
    layout: Layout = SERVE

    @property
    def idle_messages(self) -> int:
        return max(1, round(self.idle_rate * self.idle_seconds))

    def delivery_deadline(self, count: int) -> float:
        # Generous: a system at a tenth of Postfix's speed still finishes.
        return time.monotonic() + 60 + count / 40


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _result(system: str, mode: str, sink: Sink, started: float, cpu: float, peak: int,
            latencies: list[float], expected: int) -> Result:  # fmt: skip
    delivered = min(sink.count, expected)
    elapsed = (sink.arrivals[delivered - 1] - started) if delivered else 0.0
    result = Result(
        system=system,
        mode=mode,
        messages=delivered,
        rate=delivered / elapsed if elapsed > 0 else 0.0,
        p50_ms=_ms(percentile(latencies, 0.50)),
        p99_ms=_ms(percentile(latencies, 0.99)),
        cpu_ms=cpu * 1000 / delivered if delivered else None,
        peak_mb=peak / MB,
    )
    if delivered < expected:
        result.notes.append(f"only {delivered} of {expected} messages reached the sink in time")
    return result


def _arrival_latencies(starts: list[float], arrivals: list[float]) -> list[float]:
    # Paced at 10/s, messages arrive in the order they were sent unless one is held up
    # for longer than the gap between sends; pairing by order is exact in the normal case.
    return [arrived - sent for sent, arrived in zip(starts, arrivals, strict=False)]


async def postfix_throughput(options: Options) -> Result:
    sink = Sink(free_port())
    postfix = PrivatePostfix(free_port(), sink.port)
    source: asyncio.subprocess.Process | None = None
    try:
        await sink.start()
        await postfix.start()
        memory = PeakMemory(postfix.master_pid)
        memory.start()
        cpu_before = tree_cpu_seconds(postfix.master_pid)
        started = time.monotonic()
        deadline = options.delivery_deadline(options.messages)
        source = await asyncio.create_subprocess_exec(
            find_tool("smtp-source") or "smtp-source",
            "-s", str(options.concurrency), "-m", str(options.messages), "-l", "512",
            "-M", "bench.localhost", "-f", load.SENDER, "-t", load.RECIPIENT,
            f"127.0.0.1:{postfix.smtpd_port}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        await asyncio.wait_for(source.wait(), max(1.0, deadline - time.monotonic()))
        await sink.wait_for(options.messages, deadline)
        cpu = await wait_quiet(postfix.master_pid) - cpu_before
        peak = await memory.stop()
        latencies = await asyncio.to_thread(postfix.sent_delays)
        result = _result("postfix", "throughput", sink, started, cpu, peak, latencies,
                         options.messages)  # fmt: skip
        result.notes.append(
            f"smtp-source, {options.concurrency} sessions; latency is Postfix's own "
            "receipt-to-delivery delay= from its log"
        )
        return result
    finally:
        if source is not None:
            await stop_process(source)
        await asyncio.to_thread(postfix.stop)
        await sink.stop()


def _idle_message(index: int) -> bytes:
    message = EmailMessage()
    message["From"] = load.SENDER
    message["To"] = load.RECIPIENT
    message["Subject"] = f"bench {index}"
    message.set_content(load.TEXT)
    return message.as_bytes()


async def postfix_idle(options: Options) -> Result:
    sink = Sink(free_port())
    postfix = PrivatePostfix(free_port(), sink.port)
    try:
        await sink.start()
        await postfix.start()
        memory = PeakMemory(postfix.master_pid)
        memory.start()
        cpu_before = tree_cpu_seconds(postfix.master_pid)
        count = options.idle_messages
        bodies = [_idle_message(i) for i in range(count)]
        starts: list[float] = []

        failures: list[str] = []

        async def submit(index: int) -> None:
            sent = time.monotonic()
            try:
                await aiosmtplib.send(
                    bodies[index], sender=load.SENDER, recipients=[load.RECIPIENT],
                    hostname="127.0.0.1", port=postfix.smtpd_port,
                    local_hostname="bench.localhost", start_tls=False, use_tls=False, timeout=30,
                )  # fmt: skip
            except (aiosmtplib.SMTPException, OSError) as error:
                failures.append(repr(error))
                return
            starts.append(sent)

        started = time.monotonic()
        tasks = []
        for index in range(count):
            delay = started + index / options.idle_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(submit(index)))
        await asyncio.gather(*tasks)
        await sink.wait_for(len(starts), options.delivery_deadline(count))
        cpu = await wait_quiet(postfix.master_pid) - cpu_before
        peak = await memory.stop()
        latencies = _arrival_latencies(sorted(starts), sink.arrivals)
        result = _result("postfix", "idle", sink, started, cpu, peak, latencies, len(starts))
        if failures:
            result.notes.append(f"{len(failures)} submissions failed; first: {failures[0]}")
        result.notes.append(
            f"{options.idle_rate:g} msgs/s for {options.idle_seconds:g} s, one SMTP session "
            "each; latency is session start to the sink's receipt"
        )
        return result
    finally:
        await asyncio.to_thread(postfix.stop)
        await sink.stop()


async def kirim_run(options: Options, mode: str, seed: SeedDatabase | None = None) -> Result | None:
    """One Kirim run; with ``seed``, on a copy of that preloaded database."""
    sink = Sink(free_port())
    server = KirimServer(sink.port, free_port(), options.database, options.postgres_admin_url,
                         options.kirim_env, seed, options.layout)  # fmt: skip
    memory: PeakMemory | None = None
    try:
        await sink.start()
        await server.launch()
        # From the first moment of the Kirim processes: startup on a large database counts too.
        memory = PeakMemory(server.pids)
        memory.start()
        await server.wait_ready()
        cpu_before = tree_cpu_seconds(server.pids)
        roles_before = _role_cpu(server)
        if mode == "idle":
            starts, outcome = await raw_http.post_paced(
                "127.0.0.1", server.ports, server.api_key, options.idle_messages,
                options.idle_rate, load.message,
            )  # fmt: skip
        elif mode == "batch":
            batch = await load.post_batches(
                "127.0.0.1", server.ports, server.api_key, options.messages,
                options.concurrency,
            )  # fmt: skip
            if batch is None:
                print("batch endpoint not available", flush=True)
                return None
            outcome = batch
        else:
            outcome = await raw_http.post_singles(
                "127.0.0.1", server.ports, server.api_key, options.messages,
                options.concurrency, load.message,
            )  # fmt: skip
        expected = len(outcome.ids)
        await sink.wait_for(expected, options.delivery_deadline(expected))
        cpu = await wait_quiet(server.pids) - cpu_before
        roles = [after - before for after, before in zip(_role_cpu(server), roles_before,
                                                         strict=True)]  # fmt: skip
        quiet = time.monotonic()
        async with load.client(server.base_urls[0], server.api_key, STATUS_READERS) as http:
            api = await load.api_latencies(
                http, outcome.ids, options.latency_sample, STATUS_READERS
            )
        whole = await memory.stop()
        peak = memory.peak_between(outcome.started, quiet)
        latencies = _arrival_latencies(starts, sink.arrivals) if mode == "idle" else api
        result = _result("kirim", mode, sink, outcome.started, cpu, peak, latencies, expected)
        result.accept_rate = outcome.accept_rate
        result.peak_whole_mb = whole / MB
        result.preloaded = seed.count if seed is not None else 0
        result.layout = options.layout.label
        if outcome.failures:
            result.notes.append(
                f"{sum(outcome.failures.values())} requests failed {dict(outcome.failures)}; "
                f"first: {outcome.first_failure}"
            )
        if mode == "idle":
            result.notes.append(
                f"{options.idle_rate:g} msgs/s for {options.idle_seconds:g} s over lean "
                "keep-alive connections; latency is POST start to the sink's receipt"
            )
        else:
            result.notes.append(
                f"{options.concurrency} keep-alive connections; latency is created_at to "
                f"sent time from GET /v1/messages/{{id}} for {len(api)} sampled messages"
            )
        if options.layout.scale_out:
            result.notes.append(_layout_note(options, roles, result.messages))
        if options.database == "postgresql":
            result.notes.append(
                "PostgreSQL's own server processes are not counted in CPU ms/msg or peak MB"
            )
        if mode != "idle" and not api:
            result.notes.append("the API gave no sent times, so no latency")
        return result
    except RuntimeError as error:
        tail = server.log_tail()
        raise RuntimeError(f"{error}\n--- kirim log ---\n{tail}") from None
    finally:
        if memory is not None:
            await memory.stop()
        await server.stop()
        await sink.stop()


def _role_cpu(server: KirimServer) -> list[float]:
    """CPU seconds so far of the API processes, then of the worker processes."""
    return [tree_cpu_seconds(server.api_pids), tree_cpu_seconds(server.worker_pids)]


def _layout_note(options: Options, roles: list[float], delivered: int) -> str:
    layout = options.layout
    split = ""
    if delivered:
        api_ms, worker_ms = (seconds * 1000 / delivered for seconds in roles)
        split = f" (API {api_ms:.2f} + worker {worker_ms:.2f})"
    return (
        f"{layout.apis} `kirim serve --no-workers` and {layout.workers} `kirim worker` on one "
        f"database, the connections spread evenly over the {layout.apis} API ports; CPU ms/msg"
        f"{split} and peak MB sum every Kirim process"
    )

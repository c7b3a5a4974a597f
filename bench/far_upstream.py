"""The SMTP transport against an upstream whose replies arrive late, as over a network.

Loopback answers in microseconds, so the main benchmark cannot show what a round trip per
message costs. Here a loopback SMTP server (PIPELINING) sends every reply ``delay``
milliseconds after the command that asked for it, and the transport sends ``messages``
one-recipient messages over ``pool`` sessions, twice per delay in one run:

- **handoff**: as shipped; a session takes the next transaction as soon as a message's
  body is written, so the next MAIL/RCPT/DATA follow the final dot (one round trip per
  message);
- **wait for dot**: the session is taken again only after the reply to the dot (two
  round trips per message: the dot's reply, then the next group's).

    python -m bench.far_upstream [--delay 1 10 50] [--messages 1600] [--pool 16]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from service.delivery.smtp import SmtpTransport
from service.delivery.smtp_url import SmtpTarget, SmtpTimeouts
from service.delivery.transport import Outcome, Outgoing

BODY = b"From: a@far.test\r\nTo: b@far.test\r\nSubject: far\r\n\r\nHello.\r\n"


async def _late_server(delay: float) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        writer.write(b"220 far.test ESMTP\r\n")
        in_data = False
        try:
            while line := await reader.readline():
                if in_data:
                    if line != b".\r\n":
                        continue
                    in_data, reply = False, b"250 2.0.0 queued\r\n"
                else:
                    verb = line[:4].upper()
                    if verb == b"QUIT":
                        writer.write(b"221 bye\r\n")
                        return
                    in_data = verb == b"DATA"
                    reply = {
                        b"EHLO": b"250-far.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                        b"DATA": b"354 go\r\n",
                    }.get(verb, b"250 ok\r\n")
                loop.call_later(delay, writer.write, reply)
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _run(handoff: bool, delay: float, messages: int, pool: int) -> float:
    server = await _late_server(delay)
    port = server.sockets[0].getsockname()[1]
    target = SmtpTarget.parse(f"smtp://127.0.0.1:{port}?tls=none")
    transport = SmtpTransport(target, SmtpTimeouts(), pool_size=pool, handoff=handoff)
    jobs = [Outgoing("a@far.test", [f"r{i}@far.test"], BODY) for i in range(messages)]
    try:
        started = time.perf_counter()
        results = await asyncio.gather(*(transport.send(job) for job in jobs))
        took = time.perf_counter() - started
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()
    accepted = sum(r.results[0].outcome is Outcome.ACCEPTED for r in results)
    if accepted != messages:
        raise RuntimeError(f"only {accepted} of {messages} accepted")
    return messages / took


async def main(delays: list[float], messages: int, pool: int) -> None:
    print(f"{messages} messages over {pool} sessions; replies delayed by the upstream")
    print(f"{'delay ms':>8}  {'handoff msgs/s':>14}  {'wait for dot msgs/s':>19}  ratio")
    for delay in delays:
        fast = await _run(True, delay / 1000, messages, pool)
        slow = await _run(False, delay / 1000, messages, pool)
        print(f"{delay:8g}  {fast:14,.0f}  {slow:19,.0f}  {fast / slow:4.2f}x")


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.far_upstream", description=__doc__)
    parser.add_argument("--delay", type=float, nargs="+", default=[1.0, 10.0, 50.0])
    parser.add_argument("--messages", type=int, default=1600)
    parser.add_argument("--pool", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.delay, args.messages, args.pool))


if __name__ == "__main__":
    cli()

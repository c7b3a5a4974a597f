"""RFC 2920 on the wire: one group per transaction, replies read in order however they arrive.

A raw asyncio server stands in for the upstream here, because these tests are about bytes
and packet boundaries: it answers nothing until the client's whole group has arrived (a
client that waited for the MAIL reply would time out), and it can send every reply of a
group in one segment or one byte at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from service.delivery.transport import Outcome, Outgoing, Stage
from tests.transport.smtp_helpers import MakeTransport, message

EHLO = b"250-raw.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


@asynccontextmanager
async def raw_server(
    answer: Callable[[list[bytes]], bytes], *, dribble: bool = False
) -> AsyncIterator[tuple[int, list[list[bytes]], list[bytes]]]:
    """A server that reads a whole group (through DATA or a lone command) before replying.

    Yields its port, the command groups it read and the message bodies.
    """
    groups: list[list[bytes]] = []
    bodies: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw.test ESMTP\r\n")
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.upper().startswith(b"EHLO"):
                    writer.write(EHLO)
                    continue
                if line.upper().startswith(b"QUIT"):
                    writer.write(b"221 bye\r\n")
                    return
                group = [line]
                while line.upper().startswith((b"MAIL", b"RCPT")):
                    line = await reader.readline()
                    group.append(line)
                groups.append(group)
                reply = answer(group)
                if dribble:
                    for i in range(len(reply)):
                        writer.write(reply[i : i + 1])
                        await writer.drain()
                        await asyncio.sleep(0)
                else:
                    writer.write(reply)
                if group[-1].upper().startswith(b"DATA") and reply.endswith(b"354 go\r\n"):
                    body = []
                    while (line := await reader.readline()) not in (b".\r\n", b""):
                        body.append(line)
                    bodies.append(b"".join(body))
                    writer.write(b"250 2.0.0 queued\r\n")
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, groups, bodies
    finally:
        server.close()
        await server.wait_closed()


def _all_ok(group: list[bytes]) -> bytes:
    replies = []
    for line in group:
        if line.startswith(b"DATA"):
            replies.append(b"354 go\r\n")
        elif line.startswith(b"RSET"):
            replies.append(b"250 reset\r\n")
        else:
            replies.append(b"250-first line\r\n250 2.1.5 ok\r\n")
    return b"".join(replies)


def _job(recipients: list[str]) -> Outgoing:
    return Outgoing("sender@test.kirim", recipients, message())


async def test_one_group_per_transaction_and_replies_in_one_segment(
    make_transport: MakeTransport,
) -> None:
    async with raw_server(_all_ok) as (port, groups, bodies):
        transport = make_transport(f"smtp://127.0.0.1:{port}?tls=none")
        for _ in range(3):  # on one reused session
            result = await transport.send(_job(["a@test.kirim", "b@test.kirim"]))
            assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}
    assert len(groups) == 3
    assert bodies == [message()] * 3
    for group in groups:
        assert [line.split(b":")[0] for line in group] == [
            b"MAIL FROM",
            b"RCPT TO",
            b"RCPT TO",
            b"DATA\r\n",
        ]
    assert transport.connections_opened == 1


async def test_replies_split_into_single_bytes(make_transport: MakeTransport) -> None:
    async with raw_server(_all_ok, dribble=True) as (port, _, _):
        transport = make_transport(f"smtp://127.0.0.1:{port}?tls=none")
        result = await transport.send(_job(["a@test.kirim", "b@test.kirim", "c@test.kirim"]))
    assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}


async def test_refused_sender_with_data_accepted_ends_with_an_empty_message(
    make_transport: MakeTransport,
) -> None:
    """RFC 2920 §3.1: a 354 after every RCPT failed is answered with a lone dot."""

    def answer(group: list[bytes]) -> bytes:
        if group[0].startswith(b"MAIL") and b"<a@" in group[1]:
            return b"550 5.7.1 sender refused\r\n503 need MAIL\r\n354 go\r\n"
        return _all_ok(group)

    async with raw_server(answer) as (port, _, bodies):
        transport = make_transport(f"smtp://127.0.0.1:{port}?tls=none")
        result = await transport.send(_job(["a@test.kirim"]))
        (r,) = result.results
        assert (r.outcome, r.stage, r.reply.code) == (Outcome.PERMANENT, Stage.MAIL, 550)
        # The session stayed in step: the next transaction on it is delivered.
        ok = await transport.send(_job(["b@test.kirim"]))
    assert bodies == [b"", message()]  # the empty message, then the real one
    assert ok.results[0].outcome is Outcome.ACCEPTED
    assert transport.connections_opened == 1


async def test_every_rcpt_refused_resets_before_the_next_transaction(
    make_transport: MakeTransport,
) -> None:
    def answer(group: list[bytes]) -> bytes:
        if group[0].startswith(b"MAIL") and b"nobody" in group[1]:
            return b"250 ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n"
        return _all_ok(group)

    async with raw_server(answer) as (port, groups, _):
        transport = make_transport(f"smtp://127.0.0.1:{port}?tls=none")
        refused = await transport.send(_job(["nobody@test.kirim"]))
        ok = await transport.send(_job(["a@test.kirim"]))
    (r,) = refused.results
    assert (r.outcome, r.stage, r.reply.code, r.reply.enhanced) == (
        Outcome.PERMANENT,
        Stage.RCPT,
        550,
        "5.1.1",
    )
    assert groups[1] == [b"RSET\r\n"]
    assert ok.results[0].outcome is Outcome.ACCEPTED

"""A session goes to the next transaction as soon as a message's body is written.

With PIPELINING, the next transaction's MAIL, RCPT and DATA follow the final dot in the
same write (RFC 2920 §3.1) and the reply to the dot is read first. The server here holds
each dot's reply until the next command arrives (or two seconds pass), so a client that
waited for the reply before starting the next transaction is seen doing so.
"""

from __future__ import annotations

import asyncio

import pytest

from service.delivery.smtp import SmtpTransport
from service.delivery.transport import Outcome, Outgoing, SendResult, Stage
from tests.support.holding_smtp import HoldingSmtpServer
from tests.transport.smtp_helpers import MakeTransport, message


def _job(name: str, handoffs: list[str]) -> Outgoing:
    return Outgoing(
        f"{name}@test.kirim",
        [f"to-{name}@test.kirim"],
        message(f"<{name}@test.kirim>"),
        on_handoff=lambda: handoffs.append(name),
    )


async def _send_both(transport: SmtpTransport, handoffs: list[str]) -> list[SendResult]:
    # One session: the second send waits for the first to hand the session on.
    return await asyncio.gather(
        transport.send(_job("first", handoffs)), transport.send(_job("second", handoffs))
    )


async def test_the_next_transaction_follows_the_final_dot(make_transport: MakeTransport) -> None:
    handoffs: list[str] = []
    async with HoldingSmtpServer(hold=0.5) as server:
        transport = make_transport(server.url, pool_size=1)
        first, second = await _send_both(transport, handoffs)
    assert [r.outcome for r in first.results + second.results] == [Outcome.ACCEPTED] * 2
    assert [(r.mail_from, r.early) for r in server.received] == [
        (b"MAIL FROM:<first@test.kirim>\r\n", True),  # the second's MAIL came before the reply
        (b"MAIL FROM:<second@test.kirim>\r\n", False),  # nothing followed it
    ]
    assert [r.body for r in server.received] == [
        message("<first@test.kirim>"),
        message("<second@test.kirim>"),
    ]
    assert handoffs == ["first", "second"]
    assert transport.connections_opened == 1


async def test_a_lost_dot_reply_is_unknown_and_the_next_goes_on_a_new_connection(
    make_transport: MakeTransport,
) -> None:
    # The server takes the first message, reads the second's commands, then the connection
    # drops before the dot's reply: the first may have been delivered, the second was not.
    async with HoldingSmtpServer(
        hold=0.5, dot=lambda n: None if n == 0 else b"250 ok\r\n"
    ) as server:
        transport = make_transport(server.url, pool_size=1)
        first, second = await _send_both(transport, [])
    (r1,), (r2,) = first.results, second.results
    assert (r1.outcome, r1.stage, r1.possible_duplicate) == (Outcome.UNKNOWN, Stage.DOT, True)
    assert (r2.outcome, r2.possible_duplicate) == (Outcome.ACCEPTED, False)
    assert [(r.connection, r.mail_from, r.early) for r in server.received] == [
        (1, b"MAIL FROM:<first@test.kirim>\r\n", True),
        (2, b"MAIL FROM:<second@test.kirim>\r\n", False),
    ]
    assert transport.connections_opened == 2


@pytest.mark.parametrize(
    ("reply", "outcome", "connections"),
    [
        # A refusal ends only its own transaction: the next one stays on the session.
        (b"554 5.7.1 refused\r\n", Outcome.PERMANENT, [1, 1]),
        # 421 closes the session: the next one goes on a new connection.
        (b"421 4.3.2 shutting down\r\n", Outcome.TEMPORARY, [1, 2]),
    ],
)
async def test_the_reply_to_a_dot_decides_only_its_own_message(
    make_transport: MakeTransport, reply: bytes, outcome: Outcome, connections: list[int]
) -> None:
    async with HoldingSmtpServer(
        dot=lambda n: reply if n == 0 else b"250 ok\r\n", hold=0.5
    ) as server:
        transport = make_transport(server.url, pool_size=1)
        first, second = await _send_both(transport, [])
    (r1,), (r2,) = first.results, second.results
    assert (r1.outcome, r1.stage, r1.reply.code) == (outcome, Stage.DOT, int(reply[:3]))
    assert r2.outcome is Outcome.ACCEPTED
    assert [r.connection for r in server.received] == connections


async def test_without_pipelining_each_transaction_waits_for_the_dot_reply(
    make_transport: MakeTransport,
) -> None:
    handoffs: list[str] = []
    async with HoldingSmtpServer(pipelining=False, hold=0.2) as server:
        transport = make_transport(server.url, pool_size=1)
        first, second = await _send_both(transport, handoffs)
    assert [r.outcome for r in first.results + second.results] == [Outcome.ACCEPTED] * 2
    assert [r.early for r in server.received] == [False, False]
    assert handoffs == []
    assert transport.connections_opened == 1


async def test_handoff_off_waits_for_each_dot_reply(make_transport: MakeTransport) -> None:
    handoffs: list[str] = []
    async with HoldingSmtpServer(hold=0.2) as server:
        transport = make_transport(server.url, pool_size=1, handoff=False)
        first, second = await _send_both(transport, handoffs)
    assert [r.outcome for r in first.results + second.results] == [Outcome.ACCEPTED] * 2
    assert [r.early for r in server.received] == [False, False]
    assert handoffs == []

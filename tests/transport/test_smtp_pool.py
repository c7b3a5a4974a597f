"""Connection reuse, pool limits, stale connections, and a second real peer (aiosmtpd)."""

from __future__ import annotations

import asyncio
import itertools

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSmtpdServer
from aiosmtpd.smtp import Envelope, Session

from service.delivery.transport import Outcome, Outgoing
from tests.support.smtp_script import Action, Drop, Script, ScriptedSmtpServer
from tests.transport.smtp_helpers import MakeTransport, free_port, message


def job(n: int, recipients: tuple[str, ...] = ("r@test.kirim",)) -> Outgoing:
    return Outgoing("s@test.kirim", list(recipients), message(f"<m{n}@test.kirim>"))


async def test_ten_messages_over_one_connection(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer() as server:
        transport = make_transport(server.url())
        results = [await transport.send(job(i)) for i in range(10)]
        assert len(server.connections) == 1
        (conn,) = server.connections
        assert conn.verbs().count("EHLO") == 1 and conn.verbs().count("MAIL") == 10
    assert all(r.results[0].outcome is Outcome.ACCEPTED for r in results)
    assert [r.extra["connection"] for r in results] == ["new"] + ["reused"] * 9
    assert transport.connections_opened == 1
    assert len({m.message_id for m in server.messages}) == 10


async def test_two_hundred_messages_never_exceed_the_pool(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer() as server:
        transport = make_transport(server.url(), pool_size=10)
        results = await asyncio.gather(*(transport.send(job(i)) for i in range(200)))
        assert server.peak_connections <= 10
        assert len(server.connections) <= 10
        assert transport.connections_opened == len(server.connections)
    assert all(r.results[0].outcome is Outcome.ACCEPTED for r in results)
    ids = [m.message_id for m in server.messages]
    assert len(ids) == 200 and len(set(ids)) == 200


async def test_connection_closed_while_idle_is_replaced(make_transport: MakeTransport) -> None:
    port = free_port()
    async with ScriptedSmtpServer(port=port) as server:
        transport = make_transport(server.url())
        assert (await transport.send(job(1))).results[0].outcome is Outcome.ACCEPTED
    await asyncio.sleep(0.05)  # the server went away; its connections closed
    async with ScriptedSmtpServer(port=port) as server:
        result = await transport.send(job(2))
        assert result.results[0].outcome is Outcome.ACCEPTED
        assert result.extra["connection"] == "new"
        assert len(server.messages) == 1


async def test_stale_connection_at_mail_is_retried_once_on_a_new_one(
    make_transport: MakeTransport,
) -> None:
    calls = itertools.count()

    def mail(sender: str) -> Action:
        # The second MAIL arrives on the reused connection just as the server drops it.
        return Drop(reset=True) if next(calls) == 1 else "250 Ok"

    async with ScriptedSmtpServer(Script(mail=mail)) as server:
        transport = make_transport(server.url())
        assert (await transport.send(job(1))).results[0].outcome is Outcome.ACCEPTED
        result = await transport.send(job(2))
        assert result.results[0].outcome is Outcome.ACCEPTED
        assert result.extra["connection"] == "new"
        assert len(server.connections) == 2
        assert [m.message_id for m in server.messages] == ["<m1@test.kirim>", "<m2@test.kirim>"]


async def test_new_connection_dropping_at_mail_is_not_retried(
    make_transport: MakeTransport,
) -> None:
    async with ScriptedSmtpServer(Script(mail=Drop())) as server:
        result = await make_transport(server.url()).send(job(1))
        assert len(server.connections) == 1
    assert result.results[0].outcome is Outcome.TEMPORARY


async def test_aclose_quits_idle_connections(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer() as server:
        transport = make_transport(server.url(), pool_size=3)
        await asyncio.gather(*(transport.send(job(i)) for i in range(3)))
        await transport.aclose()
        for _ in range(100):
            if server.active_connections == 0:
                break
            await asyncio.sleep(0.01)
        assert server.active_connections == 0
        assert all(conn.verbs()[-1] == "QUIT" for conn in server.connections)


async def test_idle_timeout_retires_old_connections(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer() as server:
        transport = make_transport(server.url(), idle_timeout=0.05)
        await transport.send(job(1))
        await asyncio.sleep(0.1)
        result = await transport.send(job(2))
        assert result.extra["connection"] == "new"
        assert server.connections[0].verbs()[-1] == "QUIT"


class _Recorder:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_RCPT(
        self,
        server: AioSmtpdServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.startswith("unknown"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: AioSmtpdServer, session: Session, envelope: Envelope
    ) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 Message accepted"


async def test_against_aiosmtpd_as_a_second_real_peer(make_transport: MakeTransport) -> None:
    recorder = _Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        transport = make_transport(f"smtp://127.0.0.1:{controller.port}?tls=none")
        data = message(body=b".\r\n..\r\n.x\r\nend\r\n")
        recipients = ["a@test.kirim", "unknown@test.kirim", "b@test.kirim"]
        first = await transport.send(Outgoing("s@test.kirim", recipients, data))
        second = await transport.send(Outgoing("s@test.kirim", ["c@test.kirim"], data))
    finally:
        await asyncio.to_thread(controller.stop)
    a, unknown, b = first.results
    assert (a.outcome, b.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
    assert (unknown.outcome, unknown.reply.code, unknown.reply.enhanced) == (
        Outcome.PERMANENT,
        550,
        "5.1.1",
    )
    assert second.results[0].outcome is Outcome.ACCEPTED
    assert second.extra["connection"] == "reused"
    env1, env2 = recorder.envelopes
    assert env1.rcpt_tos == ["a@test.kirim", "b@test.kirim"] and env2.rcpt_tos == ["c@test.kirim"]
    assert env1.original_content == data

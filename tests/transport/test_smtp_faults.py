"""Upstream faults (test plan group B1-B8) against the scripted server on loopback."""

from __future__ import annotations

import time
from dataclasses import replace

from service.delivery.transport import Outcome, Outgoing, Stage
from tests.support.smtp_script import DataFault, Drop, Script, ScriptedSmtpServer, Stall
from tests.transport.smtp_helpers import FAST, MakeTransport, free_port, message

THREE = ["a@test.kirim", "b@test.kirim", "c@test.kirim"]


def job(recipients: list[str] | None = None, data: bytes | None = None) -> Outgoing:
    return Outgoing("sender@test.kirim", recipients or ["a@test.kirim"], data or message())


async def test_b1_connection_refused_then_back(make_transport: MakeTransport) -> None:
    port = free_port()
    transport = make_transport(f"smtp://127.0.0.1:{port}?tls=none")
    result = await transport.send(job(THREE))
    assert result.stage is Stage.CONNECT
    for r in result.results:
        assert (r.outcome, r.stage, r.reply.code) == (Outcome.TEMPORARY, Stage.CONNECT, None)
        assert "refused" in r.reply.text.lower() or "failed" in r.reply.text.lower()
    async with ScriptedSmtpServer(port=port) as server:
        result = await transport.send(job(THREE))
        assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}
        assert server.counts == dict.fromkeys(THREE, 1)


async def test_b2_greeting_421(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer(Script(greeting="421 4.3.2 Service shutting down")) as server:
        result = await make_transport(server.url()).send(job(THREE))
    assert result.stage is Stage.GREETING
    for r in result.results:
        assert (r.outcome, r.stage, r.reply.code) == (Outcome.TEMPORARY, Stage.GREETING, 421)
        assert r.reply.enhanced == "4.3.2"
    assert not server.messages


async def test_b2_421_after_rcpt_closes_and_defers_all(
    make_transport: MakeTransport, pipelining: bool
) -> None:
    script = Script(rcpt=lambda r: "421 4.4.2 Timeout, closing" if r.startswith("b") else "250 Ok")
    async with ScriptedSmtpServer(script) as server:
        result = await make_transport(server.url()).send(job(THREE))
        (conn,) = server.connections
    for r in result.results:
        assert (r.outcome, r.stage, r.reply.code) == (Outcome.TEMPORARY, Stage.RCPT, 421)
    if pipelining:
        # The group went out in one write; nothing follows it, the body least of all.
        assert conn.verbs() == ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "DATA"]
    else:
        assert "DATA" not in conn.verbs()
        assert "c@test.kirim" not in conn.text()  # nothing more is sent on a closing session
    assert not server.messages


async def test_b2_garbage_greeting(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer(Script(greeting="Hello, I speak HTTP")) as server:
        result = await make_transport(server.url()).send(job())
    (r,) = result.results
    assert (r.outcome, r.stage, r.reply.code) == (Outcome.TEMPORARY, Stage.GREETING, None)
    assert "protocol error" in r.reply.text


async def test_b2_garbage_and_odd_codes_at_rcpt(
    make_transport: MakeTransport, pipelining: bool
) -> None:
    for odd in ("what is this", "600 6.0.0 beyond the RFC", "354 go ahead"):
        async with ScriptedSmtpServer(Script(rcpt=odd)) as server:
            transport = make_transport(server.url())
            result = await transport.send(job(THREE))
            for r in result.results:
                assert (r.outcome, r.stage, r.reply.code) == (Outcome.TEMPORARY, Stage.RCPT, None)
                assert "protocol error" in r.reply.text
            # The session was abandoned: the next send opens a new connection.
            server.script.rcpt = "250 Ok"
            assert (await transport.send(job())).results[0].outcome is Outcome.ACCEPTED
            assert len(server.connections) == 2
            # Nothing after the group (pipelined) or the odd reply (stepwise): no body.
            assert server.connections[0].verbs()[-1] == ("DATA" if pipelining else "RCPT")


async def test_b2_long_reply_lines_are_stored_truncated(make_transport: MakeTransport) -> None:
    long_text = "4.3.0 " + "overloaded\x1b[0m " * 150  # about 2,500 characters
    async with ScriptedSmtpServer(Script(rcpt=f"451 {long_text}")) as server:
        result = await make_transport(server.url()).send(job())
    (r,) = result.results
    assert (r.outcome, r.stage, r.reply.code, r.reply.enhanced) == (
        Outcome.TEMPORARY,
        Stage.RCPT,
        451,
        "4.3.0",
    )
    assert 400 <= len(r.reply.text) <= 500
    assert "\x1b" not in r.reply.text

    huge = "220 " + "x" * 10_000  # longer than any SMTP line may be: a protocol error
    async with ScriptedSmtpServer(Script(greeting=huge)) as server:
        result = await make_transport(server.url()).send(job())
    (r,) = result.results
    assert (r.outcome, r.stage) == (Outcome.TEMPORARY, Stage.GREETING)
    assert len(r.reply.text) <= 500


async def test_b3_451_for_one_of_three(make_transport: MakeTransport) -> None:
    script = Script(rcpt=lambda r: "451 4.7.1 Greylisted" if r.startswith("b") else "250 Ok")
    async with ScriptedSmtpServer(script) as server:
        result = await make_transport(server.url()).send(job(THREE))
    a, b, c = (result.for_recipient(r) for r in THREE)
    assert (a.outcome, a.stage, c.outcome) == (Outcome.ACCEPTED, Stage.DOT, Outcome.ACCEPTED)
    assert (b.outcome, b.stage, b.reply.code, b.reply.enhanced) == (
        Outcome.TEMPORARY,
        Stage.RCPT,
        451,
        "4.7.1",
    )
    (delivered,) = server.messages
    assert delivered.recipients == ("a@test.kirim", "c@test.kirim")


async def test_b4_multiline_550_at_rcpt(make_transport: MakeTransport) -> None:
    refusal = [
        "550-5.1.1 The email account that you tried to reach does not exist.",
        "550-5.1.1 Please try double-checking the recipient's email address",
        "550 5.1.1 for typos or unnecessary spaces.",
    ]
    script = Script(rcpt=lambda r: refusal if r.startswith("c") else "250 Ok")
    async with ScriptedSmtpServer(script) as server:
        result = await make_transport(server.url()).send(job(THREE))
    c = result.for_recipient("c@test.kirim")
    assert (c.outcome, c.stage, c.reply.code, c.reply.enhanced) == (
        Outcome.PERMANENT,
        Stage.RCPT,
        550,
        "5.1.1",
    )
    assert "does not exist" in c.reply.text and "typos" in c.reply.text
    assert "\n" not in c.reply.text
    assert result.for_recipient("a@test.kirim").outcome is Outcome.ACCEPTED
    assert server.messages[0].recipients == ("a@test.kirim", "b@test.kirim")


async def test_b4_554_at_final_dot_rejects_the_transaction(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer(Script(dot="554 5.7.1 Message rejected as spam")) as server:
        result = await make_transport(server.url()).send(job(THREE))
    for r in result.results:
        assert (r.outcome, r.stage, r.reply.code, r.reply.enhanced) == (
            Outcome.PERMANENT,
            Stage.DOT,
            554,
            "5.7.1",
        )
        assert not r.possible_duplicate
    assert not server.messages


async def test_4xx_and_5xx_at_mail_and_data_cover_every_recipient(
    make_transport: MakeTransport,
) -> None:
    async with ScriptedSmtpServer(Script(mail="553 5.7.1 Sender rejected")) as server:
        transport = make_transport(server.url())
        result = await transport.send(job(THREE))
        assert {(r.outcome, r.stage, r.reply.code) for r in result.results} == {
            (Outcome.PERMANENT, Stage.MAIL, 553)
        }
        server.script.mail = "250 Ok"
        server.script.data = "451 4.3.0 Try again later"
        result = await transport.send(job(THREE))
        assert {(r.outcome, r.stage, r.reply.code) for r in result.results} == {
            (Outcome.TEMPORARY, Stage.DATA, 451)
        }
        # The connection is still good after RSET.
        server.script.data = "354 Go"
        assert (await transport.send(job())).results[0].outcome is Outcome.ACCEPTED
        assert len(server.connections) == 1
        assert "RSET" in server.connections[0].verbs()


async def test_b5_452_after_100_sends_the_rest_in_a_new_transaction(
    make_transport: MakeTransport,
) -> None:
    recipients = [f"r{i}@test.kirim" for i in range(150)]
    for refusal in ("452 4.5.3 Too many recipients", "552 5.5.3 Too many recipients"):
        async with ScriptedSmtpServer(Script(max_rcpt=100, too_many=refusal)) as server:
            transport = make_transport(server.url(), max_rcpt_per_transaction=500)
            result = await transport.send(job(recipients))
        assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}
        assert [len(m.recipients) for m in server.messages] == [100, 50]
        assert server.counts == dict.fromkeys(recipients, 1)
        assert len(server.connections) == 1


async def test_b5_too_many_with_nothing_accepted_is_temporary(
    make_transport: MakeTransport,
) -> None:
    async with ScriptedSmtpServer(Script(max_rcpt=0)) as server:
        result = await make_transport(server.url()).send(job(THREE))
    assert {(r.outcome, r.stage, r.reply.code) for r in result.results} == {
        (Outcome.TEMPORARY, Stage.RCPT, 452)
    }
    assert not server.messages


async def test_more_recipients_than_the_limit_are_split(make_transport: MakeTransport) -> None:
    recipients = [f"r{i}@test.kirim" for i in range(250)]
    async with ScriptedSmtpServer() as server:
        result = await make_transport(server.url()).send(job(recipients + recipients[:5]))
    assert len(result.results) == 250  # duplicates in the envelope are sent once
    assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}
    assert [len(m.recipients) for m in server.messages] == [100, 100, 50]
    assert server.counts == dict.fromkeys(recipients, 1)


async def test_b6_drop_during_data_is_temporary_not_duplicate(
    make_transport: MakeTransport,
) -> None:
    big = message(body=b"x" * 76 + b"\r\n") * 1  # header
    big += (b"y" * 998 + b"\r\n") * 32_000  # about 32 MB: more than the socket buffers hold
    script = Script(data_fault=DataFault(after_bytes=64 * 1024, stall=0.05))
    async with ScriptedSmtpServer(script) as server:
        result = await make_transport(server.url()).send(job(THREE, big))
    for r in result.results:
        assert (r.outcome, r.stage, r.possible_duplicate) == (Outcome.TEMPORARY, Stage.DATA, False)
    assert not server.messages


async def test_b6_upstream_stops_reading_hits_the_data_block_timeout(
    make_transport: MakeTransport,
) -> None:
    big = message() + (b"z" * 998 + b"\r\n") * 32_000
    script = Script(data_fault=DataFault(after_bytes=0, stall=10))
    timeouts = replace(FAST, data_block=0.3)
    async with ScriptedSmtpServer(script) as server:
        started = time.monotonic()
        result = await make_transport(server.url(), timeouts).send(job(THREE, big))
        assert time.monotonic() - started < 5
    for r in result.results:
        assert (r.outcome, r.stage, r.possible_duplicate) == (Outcome.TEMPORARY, Stage.DATA, False)
        assert "stopped reading" in r.reply.text


async def test_b7_drop_after_final_dot_is_unknown_and_flagged(
    make_transport: MakeTransport,
) -> None:
    async with ScriptedSmtpServer(Script(dot=Drop(keep=True))) as server:
        transport = make_transport(server.url())
        result = await transport.send(job(THREE))
        for r in result.results:
            assert (r.outcome, r.stage, r.possible_duplicate) == (Outcome.UNKNOWN, Stage.DOT, True)
            assert r.reply.code is None
        # The worker retries with the same bytes: two copies, one Message-ID.
        server.script.dot = "250 2.0.0 Ok"
        retry = await transport.send(job(THREE))
        assert {r.outcome for r in retry.results} == {Outcome.ACCEPTED}
    assert [m.message_id for m in server.messages] == ["<m1@test.kirim>"] * 2


async def test_b7_no_reply_within_final_dot_timeout(make_transport: MakeTransport) -> None:
    timeouts = replace(FAST, final_dot=0.4)
    async with ScriptedSmtpServer(Script(dot=Stall(5, "250 Ok"))) as server:
        started = time.monotonic()
        result = await make_transport(server.url(), timeouts).send(job(THREE))
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 3
    for r in result.results:
        assert (r.outcome, r.stage, r.possible_duplicate) == (Outcome.UNKNOWN, Stage.DOT, True)
        assert "0.4s" in r.reply.text


async def test_b8_slow_final_reply_within_timeout_is_success(
    make_transport: MakeTransport,
) -> None:
    timeouts = replace(FAST, final_dot=1.0, data=0.5)
    async with ScriptedSmtpServer(Script(dot=Stall(0.9, "250 2.0.0 Ok: queued"))) as server:
        started = time.monotonic()
        result = await make_transport(server.url(), timeouts).send(job(THREE))
        assert time.monotonic() - started >= 0.9
    for r in result.results:
        assert (r.outcome, r.stage, r.possible_duplicate) == (Outcome.ACCEPTED, Stage.DOT, False)
    assert len(server.messages) == 1


async def test_stalled_rcpt_times_out_as_temporary(make_transport: MakeTransport) -> None:
    timeouts = replace(FAST, rcpt=0.3)
    async with ScriptedSmtpServer(Script(rcpt=Stall(5))) as server:
        result = await make_transport(server.url(), timeouts).send(job(THREE))
    for r in result.results:
        assert (r.outcome, r.stage, r.reply.code) == (Outcome.TEMPORARY, Stage.RCPT, None)
        assert "timed out" in r.reply.text


async def test_stalled_greeting_times_out(make_transport: MakeTransport) -> None:
    timeouts = replace(FAST, greeting=0.3)
    async with ScriptedSmtpServer(Script(greeting=Stall(5))) as server:
        result = await make_transport(server.url(), timeouts).send(job())
    (r,) = result.results
    assert (r.outcome, r.stage) == (Outcome.TEMPORARY, Stage.GREETING)


async def test_odd_replies_after_the_dot_are_unknown(make_transport: MakeTransport) -> None:
    for odd in ("garbage after dot", "600 6.0.0 what", Drop(keep=False)):
        async with ScriptedSmtpServer(Script(dot=odd)) as server:
            result = await make_transport(server.url()).send(job(THREE))
        for r in result.results:
            assert (r.outcome, r.stage, r.possible_duplicate) == (Outcome.UNKNOWN, Stage.DOT, True)


async def test_slow_354_times_out_before_the_body(make_transport: MakeTransport) -> None:
    timeouts = replace(FAST, data=0.3)
    async with ScriptedSmtpServer(Script(data=Stall(5, "354 go"))) as server:
        result = await make_transport(server.url(), timeouts).send(job(THREE))
    for r in result.results:
        assert (r.outcome, r.stage, r.possible_duplicate) == (Outcome.TEMPORARY, Stage.DATA, False)

"""Content fidelity (B11) and the MAIL parameters chosen from the upstream's EHLO."""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
from email.message import EmailMessage

from service.delivery.transport import Outcome, Outgoing, Stage
from tests.support.smtp_script import Script, ScriptedSmtpServer
from tests.transport.smtp_helpers import MakeTransport, message


def rich_message() -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "sender@test.kirim"
    msg["To"] = "rcpt@test.kirim"
    msg["Subject"] = "Fidelity"
    msg["Message-ID"] = "<fidelity@test.kirim>"
    text = ".\n..\n.x\n" + "L" * 5000 + "\nnaïve café 東京\n.\n"
    msg.set_content(text, cte="quoted-printable")
    msg.add_attachment(os.urandom(3000) + b"\r\n.\r\n\x00", maintype="application", subtype="zip")
    return msg.as_bytes()


def part_hashes(data: bytes) -> list[str]:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    return [
        hashlib.sha256(part.get_payload(decode=True) or b"").hexdigest()
        for part in parsed.walk()
        if not part.is_multipart()
    ]


async def test_b11_dots_long_lines_8bit_and_binary_survive(make_transport: MakeTransport) -> None:
    data = rich_message()
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    async with ScriptedSmtpServer() as server:
        transport = make_transport(server.url())
        result = await transport.send(Outgoing("sender@test.kirim", ["r@test.kirim"], data))
    assert result.results[0].outcome is Outcome.ACCEPTED
    (got,) = server.messages
    assert got.data == data
    assert part_hashes(got.data) == part_hashes(data)
    assert got.message_id == "<fidelity@test.kirim>"


async def test_b11_lines_that_look_like_the_end_of_data(make_transport: MakeTransport) -> None:
    body = b".\r\n..\r\n.x\r\n. \r\n...\r\n\r\n.\r\n"
    data = message(body=body)
    async with ScriptedSmtpServer() as server:
        await make_transport(server.url()).send(Outgoing("s@test.kirim", ["r@test.kirim"], data))
    assert server.messages[0].data == data


async def test_b11_bare_line_endings_become_crlf(make_transport: MakeTransport) -> None:
    data = message(body=b"one\ntwo\rthree\r\nfour")
    async with ScriptedSmtpServer() as server:
        await make_transport(server.url()).send(Outgoing("s@test.kirim", ["r@test.kirim"], data))
    assert server.messages[0].data.endswith(b"\r\n\r\none\r\ntwo\r\nthree\r\nfour\r\n")


async def test_8bitmime_parameter_when_asked_and_offered(make_transport: MakeTransport) -> None:
    data = message(body="grüße\r\n".encode())
    async with ScriptedSmtpServer(Script(size=10_000_000)) as server:
        transport = make_transport(server.url())
        await transport.send(Outgoing("s@test.kirim", ["r@test.kirim"], data, eight_bit=True))
        server.script.eightbitmime = False
        await transport.send(Outgoing("s@test.kirim", ["r@test.kirim"], data, eight_bit=True))
    first, second = server.messages
    assert first.mail_params == ("BODY=8BITMIME", f"SIZE={len(data)}")
    assert second.data == data  # sent unchanged anyway (as most MTAs do)


async def test_smtputf8_when_offered(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer() as server:
        job = Outgoing("s@test.kirim", ["用户@例子.广告", "r@test.kirim"], message(), smtputf8=True)
        result = await make_transport(server.url()).send(job)
    assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}
    (got,) = server.messages
    assert got.mail_params == ("SMTPUTF8",)
    assert got.recipients == ("用户@例子.广告", "r@test.kirim")


async def test_smtputf8_required_but_not_offered_is_permanent(
    make_transport: MakeTransport,
) -> None:
    async with ScriptedSmtpServer(Script(smtputf8=False)) as server:
        transport = make_transport(server.url())
        flagged = Outgoing("s@test.kirim", ["r@test.kirim"], message(), smtputf8=True)
        result = await transport.send(flagged)
        assert not any(conn.saw("MAIL") for conn in server.connections)
        mixed = Outgoing("s@test.kirim", ["用户@例子.广告", "r@test.kirim"], message())
        mixed_result = await transport.send(mixed)
    (r,) = result.results
    assert (r.outcome, r.stage, r.reply.enhanced) == (Outcome.PERMANENT, Stage.MAIL, "5.6.7")
    utf8, ascii_ = mixed_result.results
    assert (utf8.outcome, utf8.reply.enhanced) == (Outcome.PERMANENT, "5.6.7")
    assert ascii_.outcome is Outcome.ACCEPTED
    assert server.messages[0].recipients == ("r@test.kirim",)


async def test_message_larger_than_advertised_size_is_permanent(
    make_transport: MakeTransport,
) -> None:
    async with ScriptedSmtpServer(Script(size=1000)) as server:
        job = Outgoing("s@test.kirim", ["r@test.kirim"], message(body=b"x" * 2000))
        result = await make_transport(server.url()).send(job)
        assert not server.connections[0].saw("MAIL")
    (r,) = result.results
    assert (r.outcome, r.stage, r.reply.enhanced) == (Outcome.PERMANENT, Stage.MAIL, "5.3.4")


async def test_invalid_addresses_are_refused_locally(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer() as server:
        transport = make_transport(server.url())
        job = Outgoing("s@test.kirim", ["bad\r\nRCPT TO:<x@evil>", "r@test.kirim"], message())
        result = await transport.send(job)
        bad_sender = await transport.send(Outgoing("a b@x\n", ["r@test.kirim"], message()))
        assert "evil" not in server.transcript()
    bad, good = result.results
    assert (bad.outcome, bad.stage, bad.reply.enhanced) == (Outcome.PERMANENT, Stage.RCPT, "5.1.3")
    assert good.outcome is Outcome.ACCEPTED
    assert bad_sender.results[0].outcome is Outcome.PERMANENT
    assert bad_sender.results[0].reply.enhanced == "5.1.7"


async def test_null_reverse_path(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer() as server:
        result = await make_transport(server.url()).send(Outgoing("", ["r@test.kirim"], message()))
        assert "MAIL FROM:<>" in server.connections[0].client_lines()
    assert result.results[0].outcome is Outcome.ACCEPTED

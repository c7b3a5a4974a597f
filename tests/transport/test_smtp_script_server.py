"""The scripted test server itself: thread mode, an independent client, and load."""

from __future__ import annotations

import asyncio
import smtplib
import time

from service.delivery.smtp_url import SmtpTimeouts
from service.delivery.transport import Outcome, Outgoing
from tests.support.smtp_script import Script, ScriptedSmtpServer
from tests.support.tls_certs import loopback_tls
from tests.transport.smtp_helpers import MakeTransport, message


def test_thread_mode_with_the_standard_library_client() -> None:
    server = ScriptedSmtpServer(
        Script(auth=True, credentials=("u", "secret-pw")),
        tls_context=loopback_tls().server_context(),
    )
    with server.in_thread() as running:
        with smtplib.SMTP("127.0.0.1", running.port, timeout=5) as client:
            client.starttls(context=loopback_tls().client_context())
            client.login("u", "secret-pw")
            refused = client.sendmail("s@test.kirim", ["a@test.kirim"], message())
            assert refused == {}
            running.script.rcpt = "550 5.1.1 gone"
            try:
                client.sendmail("s@test.kirim", ["b@test.kirim"], message())
            except smtplib.SMTPRecipientsRefused as exc:
                assert exc.recipients["b@test.kirim"][0] == 550
            else:
                raise AssertionError("the script change was not applied")
        delivered = running.wait_for_messages_sync(1)
    assert [m.recipients for m in delivered] == [("a@test.kirim",)]
    (conn,) = server.connections
    assert conn.tls and conn.authenticated_as == "u"
    assert any(line.startswith("AUTH PLAIN ") for line in conn.client_lines())  # kept raw


def test_server_enforces_command_order() -> None:
    with ScriptedSmtpServer().in_thread() as server, smtplib.SMTP() as client:
        client.connect("127.0.0.1", server.port)
        assert client.docmd("MAIL", "FROM:<s@x>")[0] == 503  # before EHLO
        client.ehlo("client.test")
        assert client.docmd("RCPT", "TO:<r@x>")[0] == 503  # before MAIL
        assert client.docmd("MAIL", "FROM:<s@x>")[0] == 250
        assert client.docmd("MAIL", "FROM:<s@x>")[0] == 503  # nested
        assert client.docmd("DATA")[0] == 554  # no recipients
        assert client.docmd("RSET")[0] == 250
        assert client.docmd("BOGUS")[0] == 500


async def test_hundreds_of_connections_and_a_thousand_messages(
    make_transport: MakeTransport,
) -> None:
    async with ScriptedSmtpServer() as server:
        # RFC timeouts: on a loaded machine 300 handshakes can take seconds, not a failure.
        transport = make_transport(server.url(), SmtpTimeouts(), pool_size=300)
        jobs = [
            Outgoing("s@test.kirim", [f"r{i}@test.kirim"], message(f"<m{i}@test.kirim>"))
            for i in range(1000)
        ]
        started = time.monotonic()
        results = await asyncio.gather(*(transport.send(j) for j in jobs))
        elapsed = time.monotonic() - started
        assert server.peak_connections >= 200
    assert all(r.results[0].outcome is Outcome.ACCEPTED for r in results)
    assert len(server.messages) == 1000
    assert set(server.counts.values()) == {1}
    # A figure for the curious, never a failure: timings depend on the machine's load.
    print(f"scripted server: {1000 / elapsed:.0f} messages/s")

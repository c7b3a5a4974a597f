"""TLS policy and AUTH (B9): no credentials and no mail ever go out unprotected."""

from __future__ import annotations

from service.delivery.transport import Outcome, Outgoing, Stage
from tests.support.smtp_script import Script, ScriptedSmtpServer
from tests.support.tls_certs import loopback_tls, untrusted_tls, wrong_host_tls
from tests.transport.smtp_helpers import MakeTransport, message

THREE = ["a@test.kirim", "b@test.kirim", "c@test.kirim"]
PASSWORD = "canary-Pa55word-7f3e"
JOB = Outgoing("sender@test.kirim", THREE, message())


def auth_script(**kwargs: object) -> Script:
    return Script(auth=True, credentials=("kirim", PASSWORD), **kwargs)  # type: ignore[arg-type]


def url(port: int, tls: str = "starttls", scheme: str = "smtp") -> str:
    return f"{scheme}://kirim:{PASSWORD}@127.0.0.1:{port}?tls={tls}"


def assert_nothing_sent(server: ScriptedSmtpServer) -> None:
    for conn in server.connections:
        assert not conn.saw("AUTH"), conn.text()
        assert not conn.saw("MAIL"), conn.text()
        assert PASSWORD not in conn.text()
    assert not server.messages


async def test_b9_starttls_missing_with_credentials(make_transport: MakeTransport) -> None:
    # A hostile server: no STARTTLS, but AUTH offered on plaintext.
    async with ScriptedSmtpServer(auth_script(starttls=False)) as server:
        transport = make_transport(url(server.port), tls_context=loopback_tls().client_context())
        result = await transport.send(JOB)
        assert_nothing_sent(server)
    assert result.stage is Stage.TLS
    for r in result.results:
        assert (r.outcome, r.stage) == (Outcome.TEMPORARY, Stage.TLS)
        assert "STARTTLS" in r.reply.text
        assert PASSWORD not in repr(r)


async def test_b9_untrusted_certificate(make_transport: MakeTransport) -> None:
    tls = untrusted_tls().server_context()
    async with ScriptedSmtpServer(auth_script(), tls_context=tls) as server:
        transport = make_transport(url(server.port), tls_context=loopback_tls().client_context())
        result = await transport.send(JOB)
        assert_nothing_sent(server)
        assert server.connections[0].saw("STARTTLS")
    for r in result.results:
        assert (r.outcome, r.stage) == (Outcome.TEMPORARY, Stage.TLS)
        assert "certificate verification failed" in r.reply.text


async def test_b9_wrong_host_certificate(make_transport: MakeTransport) -> None:
    tls = wrong_host_tls().server_context()
    async with ScriptedSmtpServer(auth_script(), tls_context=tls) as server:
        transport = make_transport(url(server.port), tls_context=loopback_tls().client_context())
        result = await transport.send(JOB)
        assert_nothing_sent(server)
    for r in result.results:
        assert (r.outcome, r.stage) == (Outcome.TEMPORARY, Stage.TLS)
        assert "certificate" in r.reply.text


async def test_b9_default_trust_store_rejects_a_private_ca(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer(auth_script(), tls_context=loopback_tls().server_context()) as s:
        result = await make_transport(url(s.port)).send(JOB)
        assert_nothing_sent(s)
    assert {(r.outcome, r.stage) for r in result.results} == {(Outcome.TEMPORARY, Stage.TLS)}


async def test_b9_implicit_tls_bad_certificate(make_transport: MakeTransport) -> None:
    tls = untrusted_tls().server_context()
    async with ScriptedSmtpServer(auth_script(), tls_context=tls, implicit_tls=True) as server:
        transport = make_transport(
            url(server.port, "implicit"), tls_context=loopback_tls().client_context()
        )
        result = await transport.send(JOB)
        assert_nothing_sent(server)
    for r in result.results:
        assert (r.outcome, r.stage) == (Outcome.TEMPORARY, Stage.TLS)
        assert "certificate verification failed" in r.reply.text


async def test_starttls_with_trusted_certificate_and_auth(make_transport: MakeTransport) -> None:
    script = auth_script(auth_requires_tls=True)
    async with ScriptedSmtpServer(script, tls_context=loopback_tls().server_context()) as server:
        transport = make_transport(url(server.port), tls_context=loopback_tls().client_context())
        result = await transport.send(JOB)
        (conn,) = server.connections
    assert {(r.outcome, r.stage) for r in result.results} == {(Outcome.ACCEPTED, Stage.DOT)}
    assert result.extra["tls"].startswith("TLS")
    verbs = conn.verbs()
    assert verbs[:3] == ["EHLO", "STARTTLS", "EHLO"]
    assert verbs.index("AUTH") > verbs.index("STARTTLS")
    assert conn.tls and conn.authenticated_as == "kirim"
    assert server.messages[0].recipients == tuple(THREE)


async def test_implicit_tls_smtps_with_auth(make_transport: MakeTransport) -> None:
    tls = loopback_tls().server_context()
    async with ScriptedSmtpServer(auth_script(), tls_context=tls, implicit_tls=True) as server:
        transport = make_transport(
            f"smtps://kirim:{PASSWORD}@localhost:{server.port}",
            tls_context=loopback_tls().client_context(),
        )
        result = await transport.send(JOB)
        (conn,) = server.connections
    assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}
    assert conn.tls and conn.authenticated_as == "kirim"
    assert "STARTTLS" not in conn.verbs()


async def test_auth_failure_is_temporary_and_secret_free(make_transport: MakeTransport) -> None:
    script = Script(auth=True, credentials=("kirim", "another-password"))
    async with ScriptedSmtpServer(script, tls_context=loopback_tls().server_context()) as server:
        transport = make_transport(url(server.port), tls_context=loopback_tls().client_context())
        result = await transport.send(JOB)
        assert not any(conn.saw("MAIL") for conn in server.connections)
    assert result.stage is Stage.AUTH
    for r in result.results:
        assert (r.outcome, r.stage, r.reply.code, r.reply.enhanced) == (
            Outcome.TEMPORARY,
            Stage.AUTH,
            535,
            "5.7.8",
        )
    assert PASSWORD not in repr(result)


async def test_auth_not_offered_after_tls(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer(tls_context=loopback_tls().server_context()) as server:
        transport = make_transport(url(server.port), tls_context=loopback_tls().client_context())
        result = await transport.send(JOB)
        assert not any(conn.saw("MAIL") for conn in server.connections)
    assert {(r.outcome, r.stage) for r in result.results} == {(Outcome.TEMPORARY, Stage.AUTH)}


async def test_verify_false_accepts_an_untrusted_certificate(
    make_transport: MakeTransport,
) -> None:
    async with ScriptedSmtpServer(tls_context=untrusted_tls().server_context()) as server:
        transport = make_transport(f"smtp://127.0.0.1:{server.port}?tls=starttls&verify=false")
        result = await transport.send(JOB)
        assert server.connections[0].tls
    assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}


async def test_opportunistic_upgrades_when_offered_and_falls_back_when_not(
    make_transport: MakeTransport,
) -> None:
    client = loopback_tls().client_context()
    async with ScriptedSmtpServer(tls_context=loopback_tls().server_context()) as server:
        transport = make_transport(server.url("opportunistic"), tls_context=client)
        assert (await transport.send(JOB)).results[0].outcome is Outcome.ACCEPTED
        assert server.connections[0].tls
    async with ScriptedSmtpServer() as server:
        transport = make_transport(server.url("opportunistic"), tls_context=client)
        assert (await transport.send(JOB)).results[0].outcome is Outcome.ACCEPTED
        assert not server.connections[0].tls
        assert server.connections[0].verbs()[:2] == ["EHLO", "MAIL"]


async def test_tls_none_never_starts_tls(make_transport: MakeTransport) -> None:
    async with ScriptedSmtpServer(tls_context=loopback_tls().server_context()) as server:
        result = await make_transport(server.url("none")).send(JOB)
        assert "STARTTLS" not in server.connections[0].verbs()
    assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}

"""Readers against a real Dovecot on loopback: IMAP and POP3, plain and TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from service.bounces.mailbox import MailboxError, open_mailbox, parse_mailbox_url
from service.bounces.parse import parse_report
from tests.bounces.conftest import fixture_bytes
from tests.bounces.servers import Dovecot

pytestmark = pytest.mark.slow
FIXTURE_NAMES = ["qmail.eml", "arf_complaint.eml", "dsn_delayed.eml", "postfix_dsn.eml"]
IMAP_VARIANTS = [("imap", "?tls=none"), ("imap", "?tls=starttls"), ("imaps", "")]
POP3_VARIANTS = [("pop3", "?tls=none"), ("pop3", ""), ("pop3s", "")]


def _report_ids(raws: list[bytes]) -> set[str | None]:
    return {parse_report(raw).report_message_id for raw in raws}


@pytest.mark.parametrize(("scheme", "query"), IMAP_VARIANTS)
async def test_imap_fetch_done_and_set_aside(
    dovecot: Dovecot, client_tls: ssl.SSLContext, scheme: str, query: str
) -> None:
    for name in FIXTURE_NAMES:
        dovecot.deliver(fixture_bytes(name))
    mailbox = open_mailbox(dovecot.url(scheme, query), ssl_context=client_tls)
    try:
        items = await mailbox.fetch()
        assert _report_ids([i.raw for i in items]) == _report_ids(
            [fixture_bytes(n) for n in FIXTURE_NAMES]
        )
        assert len({i.handle for i in items}) == 4

        # Crash between apply and done: nothing was acknowledged, all come back.
        await mailbox.close()
        again = await mailbox.fetch()
        assert sorted(i.handle for i in again) == sorted(i.handle for i in items)

        await mailbox.done(items[0])
        await mailbox.done(items[1])
        await mailbox.set_aside(items[2])
        left = await mailbox.fetch()
        assert [i.handle for i in left] == [items[3].handle]
    finally:
        await mailbox.close()

    assert len(dovecot.messages("Processed")) == 2
    assert [parse_report(m).report_message_id for m in dovecot.messages("Unmatched")] == [
        parse_report(items[2].raw).report_message_id
    ]
    assert len(dovecot.messages()) == 1


async def test_imap_sees_mail_delivered_while_connected(
    dovecot: Dovecot, client_tls: ssl.SSLContext
) -> None:
    mailbox = open_mailbox(dovecot.url("imaps"), ssl_context=client_tls)
    try:
        assert await mailbox.fetch() == []
        dovecot.deliver(fixture_bytes("exim.eml"))
        [item] = await mailbox.fetch()
        assert parse_report(item.raw).format == "exim"
    finally:
        await mailbox.close()


@pytest.mark.parametrize(("scheme", "query"), POP3_VARIANTS)
async def test_pop3_fetch_done_and_set_aside(
    dovecot: Dovecot, client_tls: ssl.SSLContext, scheme: str, query: str, tmp_path: Path
) -> None:
    for name in FIXTURE_NAMES[:3]:
        dovecot.deliver(fixture_bytes(name))
    state = tmp_path / "pop3-aside.txt"
    mailbox = open_mailbox(
        dovecot.url(scheme, query), ssl_context=client_tls, pop3_state_file=state
    )
    items = await mailbox.fetch()
    assert _report_ids([i.raw for i in items]) == _report_ids(
        [fixture_bytes(n) for n in FIXTURE_NAMES[:3]]
    )
    # Not acknowledged yet: a second fetch (a restart) sees them again.
    assert sorted(i.handle for i in await mailbox.fetch()) == sorted(i.handle for i in items)

    await mailbox.done(items[0])
    await mailbox.set_aside(items[1])
    assert [i.handle for i in await mailbox.fetch()] == [items[2].handle]
    assert len(dovecot.messages()) == 2  # the set-aside one stays on the server

    # The set-aside record survives a restart of the reader.
    restarted = open_mailbox(
        dovecot.url(scheme, query), ssl_context=client_tls, pop3_state_file=state
    )
    assert [i.handle for i in await restarted.fetch()] == [items[2].handle]


@pytest.mark.parametrize("scheme", ["imaps", "pop3s"])
async def test_tls_is_verified_by_default(dovecot: Dovecot, scheme: str) -> None:
    dovecot.deliver(fixture_bytes("qmail.eml"))
    mailbox = open_mailbox(dovecot.url(scheme), timeout=5)
    with pytest.raises(MailboxError) as info:
        await mailbox.fetch()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert dovecot.password not in str(info.value)


@pytest.mark.parametrize(("scheme", "query"), [("imap", "?tls=none"), ("pop3s", "")])
async def test_credentials_never_leak(
    dovecot: Dovecot, client_tls: ssl.SSLContext, scheme: str, query: str
) -> None:
    url = dovecot.url(scheme, query).replace(dovecot.password, "wrong-pass-123")
    mailbox = open_mailbox(url, ssl_context=client_tls, timeout=5)
    assert "wrong-pass-123" not in repr(mailbox)
    assert dovecot.user not in repr(mailbox)
    with pytest.raises(MailboxError) as info:
        await mailbox.fetch()
    assert "login failed" in str(info.value)
    for text in (str(info.value), repr(info.value)):
        assert "wrong-pass-123" not in text
        assert dovecot.user not in text
    assert info.value.__cause__ is None and info.value.__suppress_context__
    await mailbox.close()


def test_url_parsing() -> None:
    cfg = parse_mailbox_url("imaps://u%40x:p%3Ass@mail.example.com/Bounces")
    assert (cfg.scheme, cfg.host, cfg.port, cfg.tls, cfg.folder) == (
        "imaps",
        "mail.example.com",
        993,
        "implicit",
        "Bounces",
    )
    assert (cfg.username, cfg.password) == ("u@x", "p:ss")
    assert "p:ss" not in repr(cfg) and "p:ss" not in str(cfg)
    assert parse_mailbox_url("imap://u:p@h").tls == "starttls"
    assert parse_mailbox_url("pop3://u:p@h:1110?tls=none").port == 1110
    for bad in ("http://u:p@h", "imap://h", "imap://u:p@h?tls=maybe", "imaps://u:p@h?tls=none"):
        with pytest.raises(MailboxError) as info:
            parse_mailbox_url(bad)
        assert ":p@" not in str(info.value)

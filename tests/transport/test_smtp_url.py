"""Parsing KIRIM_SMTP_URL and scaling timeouts."""

from __future__ import annotations

import pytest

from service.delivery.smtp_url import SmtpTarget, SmtpTimeouts, TlsMode


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("smtp://relay.example", "relay.example", 587, TlsMode.STARTTLS),
        ("smtp://relay.example?tls=starttls", "relay.example", 587, TlsMode.STARTTLS),
        ("smtp://relay.example?tls=none", "relay.example", 25, TlsMode.NONE),
        ("smtp://relay.example?tls=opportunistic", "relay.example", 25, TlsMode.OPPORTUNISTIC),
        ("smtp://relay.example?tls=implicit", "relay.example", 465, TlsMode.IMPLICIT),
        ("smtps://relay.example", "relay.example", 465, TlsMode.IMPLICIT),
        ("smtp://127.0.0.1:2525?tls=none", "127.0.0.1", 2525, TlsMode.NONE),
        ("SMTP://[::1]:2526?TLS=NONE", "::1", 2526, TlsMode.NONE),
    ],
)
def test_parse_modes_and_default_ports(url: str, host: str, port: int, tls: TlsMode) -> None:
    target = SmtpTarget.parse(url)
    assert (target.host, target.port, target.tls, target.verify) == (host, port, tls, True)
    assert target.username is None and target.password is None


def test_credentials_are_decoded_and_never_shown() -> None:
    target = SmtpTarget.parse("smtp://us%40er:p%40ss%3Aw0rd-SECRET@relay:587?tls=starttls")
    assert target.username == "us@er"
    assert target.password is not None
    assert target.password.get_secret_value() == "p@ss:w0rd-SECRET"
    for shown in (repr(target), str(target), target.display_url(), f"{target}"):
        assert "SECRET" not in shown
    assert target.display_url() == "smtp://us%40er:***@relay:587?tls=starttls"


def test_verify_false() -> None:
    assert SmtpTarget.parse("smtps://relay?verify=false").verify is False
    assert SmtpTarget.parse("smtps://relay?verify=1").verify is True


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://relay:25", "scheme"),
        ("relay:25", "scheme"),
        ("smtp://", "no host"),
        ("smtp://relay?tls=maybe", "tls="),
        ("smtp://relay?verify=perhaps", "verify="),
        ("smtp://relay?tsl=none", "unknown parameter"),
        ("smtp://relay:99999", "port"),
        ("smtp://relay:0", "port"),
        ("smtp://relay/path", "path"),
        ("smtps://relay?tls=starttls", "implicit"),
        ("smtp://user:pw@relay?tls=none", "encrypted"),
        ("smtp://user:pw@relay?tls=opportunistic", "encrypted"),
        ("smtp://user@relay", "no password"),
        ("smtp://:pw@relay", "no user"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        SmtpTarget.parse(url)
    assert "pw" not in str(info.value)


def test_timeouts_follow_rfc_5321_and_scale() -> None:
    defaults = SmtpTimeouts()
    assert (defaults.greeting, defaults.mail, defaults.rcpt) == (300, 300, 300)
    assert (defaults.data, defaults.data_block, defaults.final_dot) == (120, 180, 600)
    fast = defaults.scaled(0.01)
    assert fast.final_dot == pytest.approx(6.0)
    assert fast.connect == pytest.approx(0.3)
    with pytest.raises(ValueError):
        defaults.scaled(0)

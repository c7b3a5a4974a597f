"""Where and how to reach the upstream SMTP server: the parsed ``KIRIM_SMTP_URL``.

``smtp://[user:pass@]host[:port][?tls=none|starttls|opportunistic|implicit&verify=true|false]``
and ``smtps://[user:pass@]host[:port]`` (implicit TLS). Without ``tls=`` an ``smtp://`` URL
means STARTTLS *required*: the safe default (RFC 3207 §6, RFC 8314).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import StrEnum
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from pydantic import SecretStr


class TlsMode(StrEnum):
    NONE = "none"  # plaintext only (a local relay or a capture server)
    STARTTLS = "starttls"  # STARTTLS required: never send mail or credentials without it
    OPPORTUNISTIC = "opportunistic"  # STARTTLS if offered, else plaintext; no credentials
    IMPLICIT = "implicit"  # TLS from the first byte (port 465)


_DEFAULT_PORTS = {
    TlsMode.NONE: 25,
    TlsMode.OPPORTUNISTIC: 25,
    TlsMode.STARTTLS: 587,
    TlsMode.IMPLICIT: 465,
}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int
    tls: TlsMode = TlsMode.STARTTLS
    verify: bool = True
    username: str | None = None
    # SecretStr keeps the password out of repr(), str() and tracebacks.
    password: SecretStr | None = None

    def __post_init__(self) -> None:
        if self.username is not None and self.tls in (TlsMode.NONE, TlsMode.OPPORTUNISTIC):
            raise ValueError(
                f"SMTP credentials need an encrypted channel: use tls=starttls or implicit "
                f"(smtps://), not tls={self.tls.value}"
            )

    @property
    def has_credentials(self) -> bool:
        return self.username is not None

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        return parse_smtp_url(url)

    def display_url(self) -> str:
        """The URL with the password masked: safe to log and show."""
        auth = ""
        if self.username is not None:
            auth = f"{quote(self.username, safe='')}:***@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        verify = "" if self.verify else "&verify=false"
        return f"smtp://{auth}{host}:{self.port}?tls={self.tls.value}{verify}"

    def __str__(self) -> str:
        return self.display_url()


def parse_smtp_url(url: str) -> SmtpTarget:
    """Parse an SMTP URL; raise ``ValueError`` with a readable reason (never the password)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise ValueError(f"invalid SMTP URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        shown = scheme or "(none)"
        raise ValueError(f"SMTP URL scheme must be smtp:// or smtps://, not {shown}")
    if not parts.hostname:
        raise ValueError("SMTP URL has no host")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError("SMTP URL must not have a path or fragment")

    tls, verify = _parse_query(parts.query, scheme)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("SMTP URL port must be a number between 1 and 65535") from None
    if port == 0:
        raise ValueError("SMTP URL port must be a number between 1 and 65535")

    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and not username:
        raise ValueError("SMTP URL has a password but no user name")
    if username is not None and password is None:
        raise ValueError("SMTP URL has a user name but no password (user:pass@host)")

    return SmtpTarget(
        host=parts.hostname,
        port=port or _DEFAULT_PORTS[tls],
        tls=tls,
        verify=verify,
        username=username,
        password=SecretStr(password) if password is not None else None,
    )


def _parse_query(query: str, scheme: str) -> tuple[TlsMode, bool]:
    tls = TlsMode.IMPLICIT if scheme == "smtps" else TlsMode.STARTTLS
    verify = True
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        name, val = key.lower(), value.strip().lower()
        if name == "tls":
            try:
                tls = TlsMode(val)
            except ValueError:
                allowed = ", ".join(m.value for m in TlsMode)
                raise ValueError(f"SMTP URL tls={value!r} is not one of {allowed}") from None
            if scheme == "smtps" and tls is not TlsMode.IMPLICIT:
                raise ValueError("smtps:// always uses implicit TLS; use smtp:// for tls=" + val)
        elif name == "verify":
            if val in _TRUE:
                verify = True
            elif val in _FALSE:
                verify = False
            else:
                raise ValueError(f"SMTP URL verify={value!r} must be true or false")
        else:
            raise ValueError(f"SMTP URL has an unknown parameter {key!r} (known: tls, verify)")
    return tls, verify


@dataclass(frozen=True, slots=True)
class SmtpTimeouts:
    """Per-command client timeouts in seconds, RFC 5321 §4.5.3.2 minimums by default."""

    connect: float = 30.0
    greeting: float = 300.0
    command: float = 300.0  # EHLO, STARTTLS (and its handshake), AUTH, RSET
    mail: float = 300.0
    rcpt: float = 300.0
    data: float = 120.0  # waiting for 354
    data_block: float = 180.0  # each block of the body leaving our buffer
    final_dot: float = 600.0  # short values here cause duplicate deliveries (RFC 1047)

    def scaled(self, factor: float) -> SmtpTimeouts:
        if factor <= 0:
            raise ValueError("timeout scale factor must be positive")
        return replace(self, **{f.name: getattr(self, f.name) * factor for f in fields(self)})

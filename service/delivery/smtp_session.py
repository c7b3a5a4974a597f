"""Opening one ready-to-use SMTP session: connect, greeting, EHLO, TLS policy, AUTH.

Every failure becomes a ``SessionError`` carrying the stage reached and a clean reply; the
TLS policy is enforced here and not left to aiosmtplib's defaults (which upgrade only
opportunistically and will AUTH over plaintext).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, field

import aiosmtplib
from aiosmtplib import SMTPResponseException

from service.delivery.smtp_reply import clean_text, local_reply, protocol_error, server_reply
from service.delivery.smtp_url import SmtpTarget, SmtpTimeouts, TlsMode
from service.delivery.smtp_wire import Wire, WireError
from service.delivery.transport import Reply, Stage


class SessionError(Exception):
    """The session could not be opened or broke outside a transaction."""

    def __init__(self, stage: Stage, reply: Reply) -> None:
        super().__init__(f"{stage.value}: {reply.text}")
        self.stage = stage
        self.reply = reply


@dataclass(slots=True)
class Offers:
    """The extensions an upstream offered in its EHLO reply, read once per session (every
    transaction consults them)."""

    smtputf8: bool
    eight_bit_mime: bool
    size: bool
    size_limit: int  # 0: SIZE without a limit, or none offered
    pipelining: bool

    @classmethod
    def of(cls, smtp: aiosmtplib.SMTP) -> Offers:
        size = smtp.supports_extension("size")
        return cls(
            smtputf8=smtp.supports_extension("smtputf8"),
            eight_bit_mime=smtp.supports_extension("8bitmime"),
            size=size,
            size_limit=size_limit(smtp.esmtp_extensions.get("size", "")) if size else 0,
            pipelining=smtp.supports_extension("pipelining"),
        )


def size_limit(value: str) -> int:
    """The limit of a SIZE offer's argument (RFC 1870); 0 when it gives none."""
    try:
        return max(0, int(value.split()[0])) if value.strip() else 0
    except ValueError:
        return 0


@dataclass(slots=True)
class Session:
    """An open session: what the upstream offered (``smtp``, ``offers``) and its command
    channel."""

    smtp: aiosmtplib.SMTP
    wire: Wire
    tls_version: str | None
    offers: Offers
    opened_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    transactions: int = 0

    @property
    def connected(self) -> bool:
        return self.wire.connected

    async def close(self, quit_timeout: float = 1.0) -> None:
        """Say QUIT if the peer is still there, then drop the socket regardless."""
        if self.wire.connected and quit_timeout > 0:
            with contextlib.suppress(WireError, OSError):
                self.wire.write(b"QUIT\r\n")
                await self.wire.reply(quit_timeout)
        self.wire.close()


def build_tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def open_session(
    target: SmtpTarget,
    timeouts: SmtpTimeouts,
    *,
    local_hostname: str,
    tls_context: ssl.SSLContext,
) -> Session:
    sock = await _connect_socket(target.host, target.port, timeouts.connect)
    implicit = target.tls is TlsMode.IMPLICIT
    smtp = aiosmtplib.SMTP(
        hostname=target.host,
        local_hostname=local_hostname,
        use_tls=implicit,
        start_tls=False,  # we decide about STARTTLS ourselves, below
        validate_certs=target.verify,
        tls_context=tls_context,
        sock=sock,
        timeout=timeouts.command,
    )
    try:
        await _greet(smtp, timeouts, implicit)
        await _ehlo(smtp, timeouts)
        await _apply_tls_policy(smtp, target, timeouts)
        await _authenticate(smtp, target, timeouts)
        transport = smtp.transport
        if transport is None or not smtp.is_connected:
            raise SessionError(Stage.HELO, local_reply("connection lost during session setup"))
        tls_version = _tls_version(smtp)
        wire = Wire.adopt(transport)
    except BaseException:
        smtp.close()
        raise
    return Session(smtp=smtp, wire=wire, tls_version=tls_version, offers=Offers.of(smtp))


async def _connect_socket(host: str, port: int, limit: float) -> socket.socket:
    """TCP connect under its own timeout (aiosmtplib shares one with the greeting)."""
    loop = asyncio.get_running_loop()

    async def attempt() -> socket.socket:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"no address found for {host}")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                error = exc
            except BaseException:
                sock.close()
                raise
            else:
                return sock
        raise error

    try:
        return await asyncio.wait_for(attempt(), limit)
    except TimeoutError:
        raise SessionError(
            Stage.CONNECT, local_reply(f"connect to {host}:{port} timed out after {limit:g}s")
        ) from None
    except OSError as exc:
        raise SessionError(
            Stage.CONNECT, local_reply(f"connect to {host}:{port} failed: {exc}")
        ) from None


async def _greet(smtp: aiosmtplib.SMTP, timeouts: SmtpTimeouts, implicit: bool) -> None:
    try:
        await smtp.connect(timeout=timeouts.greeting)
    except aiosmtplib.SMTPConnectResponseError as exc:
        raise SessionError(Stage.GREETING, server_reply(exc.code, exc.message)) from None
    except SMTPResponseException as exc:  # garbage instead of a greeting
        raise SessionError(Stage.GREETING, protocol_error(exc.message)) from None
    except aiosmtplib.SMTPConnectTimeoutError:
        raise SessionError(
            Stage.GREETING, local_reply(f"no greeting within {timeouts.greeting:g}s")
        ) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        cause = exc.__cause__
        if implicit and isinstance(cause, ssl.SSLError):
            raise SessionError(Stage.TLS, _tls_failure(cause)) from None
        raise SessionError(Stage.GREETING, local_reply(f"greeting failed: {exc}")) from None


async def _ehlo(smtp: aiosmtplib.SMTP, timeouts: SmtpTimeouts) -> None:
    try:
        await smtp.ehlo(timeout=timeouts.command)
    except aiosmtplib.SMTPHeloError as exc:
        if not (500 <= exc.code <= 599 and smtp.is_connected):
            raise SessionError(Stage.HELO, _command_reply(exc)) from None
        # RFC 5321 §3.2: fall back to HELO when EHLO is refused.
        try:
            await smtp.helo(timeout=timeouts.command)
        except aiosmtplib.SMTPException as helo_exc:
            raise SessionError(Stage.HELO, _failure_reply(helo_exc, "HELO")) from None
    except aiosmtplib.SMTPException as exc:
        raise SessionError(Stage.HELO, _failure_reply(exc, "EHLO")) from None


async def _apply_tls_policy(
    smtp: aiosmtplib.SMTP, target: SmtpTarget, timeouts: SmtpTimeouts
) -> None:
    if target.tls is TlsMode.IMPLICIT:
        if not _tls_active(smtp):  # cannot happen unless aiosmtplib changes; never assume
            raise SessionError(Stage.TLS, local_reply("implicit TLS is not active"))
        return
    if target.tls is TlsMode.NONE:
        return
    offered = smtp.supports_extension("starttls")
    if not offered:
        if target.tls is TlsMode.OPPORTUNISTIC:
            return
        raise SessionError(
            Stage.TLS,
            local_reply(
                "upstream did not offer STARTTLS and TLS is required (tls=starttls); "
                "nothing was sent"
            ),
        )
    try:
        await smtp.starttls(server_hostname=target.host, timeout=timeouts.command)
    except SMTPResponseException as exc:
        raise SessionError(Stage.TLS, _command_reply(exc)) from None
    except ssl.SSLError as exc:
        raise SessionError(Stage.TLS, _tls_failure(exc)) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise SessionError(Stage.TLS, local_reply(f"STARTTLS failed: {exc}")) from None
    if not _tls_active(smtp):
        raise SessionError(Stage.TLS, local_reply("STARTTLS did not produce a TLS channel"))
    # RFC 3207 §4.2: forget what was learnt before TLS and ask again.
    await _ehlo(smtp, timeouts)


async def _authenticate(smtp: aiosmtplib.SMTP, target: SmtpTarget, timeouts: SmtpTimeouts) -> None:
    if target.username is None or target.password is None:
        return
    if not _tls_active(smtp):
        raise SessionError(
            Stage.AUTH, local_reply("refusing to send credentials over an unencrypted channel")
        )
    if not smtp.supports_extension("auth") or not smtp.supported_auth_methods:
        raise SessionError(
            Stage.AUTH, local_reply("upstream offers no AUTH mechanism we support (PLAIN, LOGIN)")
        )
    try:
        await smtp.login(
            target.username, target.password.get_secret_value(), timeout=timeouts.command
        )
    except SMTPResponseException as exc:
        # Server text only; our own messages never include the user name or password.
        raise SessionError(Stage.AUTH, _command_reply(exc)) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise SessionError(Stage.AUTH, local_reply(f"AUTH failed: {type(exc).__name__}")) from None


def _tls_active(smtp: aiosmtplib.SMTP) -> bool:
    return smtp.is_connected and smtp.get_transport_info("sslcontext") is not None


def _tls_version(smtp: aiosmtplib.SMTP) -> str | None:
    if not _tls_active(smtp):
        return None
    ssl_object = smtp.get_transport_info("ssl_object")
    version = ssl_object.version() if ssl_object is not None else None
    return str(version) if version else "TLS"


def _tls_failure(exc: ssl.SSLError) -> Reply:
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return local_reply(f"TLS certificate verification failed: {detail}")
    return local_reply(f"TLS handshake failed: {exc.reason or exc}")


def _command_reply(exc: SMTPResponseException) -> Reply:
    if exc.code < 0:
        return protocol_error(exc.message)
    return server_reply(exc.code, exc.message)


def _failure_reply(exc: aiosmtplib.SMTPException, command: str) -> Reply:
    if isinstance(exc, SMTPResponseException):
        return _command_reply(exc)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return local_reply(f"no reply to {command}")
    return local_reply(f"{command} failed: {clean_text(str(exc))}")

"""MAIL / RCPT / DATA on one open session, turning every reply into per-recipient results.

Per RFC 5321: a refused RCPT affects only that recipient; 452 (and 552, §4.5.3.1.10) at
RCPT means "send the rest in another transaction"; a reply to MAIL, DATA or the final dot
covers the whole transaction; losing the connection after the final dot leaves the
outcome unknown (RFC 1047), which is reported, never guessed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib
from aiosmtplib import SMTPResponseException
from aiosmtplib.email import parse_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from service.delivery.smtp_reply import clean_text, local_reply, protocol_error, server_reply
from service.delivery.smtp_url import SmtpTimeouts
from service.delivery.transport import Outcome, Outgoing, RecipientResult, Reply, Stage

_STAGE_ORDER = {stage: i for i, stage in enumerate(Stage)}
_BLOCK = 64 * 1024
_CLOSING = 421
# RFC 5321 §4.5.3.1.10: "too many recipients" — retry the rest in a new transaction.
_TOO_MANY = (452, 552)


class SessionBroken(Exception):
    """The connection is unusable; every still-undecided recipient gets this result."""

    def __init__(self, stage: Stage, reply: Reply, *, no_reply_at_first_mail: bool = False):
        super().__init__(f"{stage.value}: {reply.text}")
        self.stage = stage
        self.reply = reply
        # The first command on a reused connection got no answer: likely an idle socket
        # the server had already closed, so one retry on a fresh connection is safe.
        self.no_reply_at_first_mail = no_reply_at_first_mail


@dataclass(slots=True)
class Progress:
    """The results of one ``send`` as they are decided."""

    job: Outgoing
    results: dict[str, RecipientResult] = field(default_factory=dict)
    reached: Stage = Stage.CONNECT

    def reach(self, stage: Stage) -> None:
        if _STAGE_ORDER[stage] > _STAGE_ORDER[self.reached]:
            self.reached = stage

    def decide(
        self,
        recipients: Sequence[str],
        outcome: Outcome,
        stage: Stage,
        reply: Reply,
        *,
        possible_duplicate: bool = False,
    ) -> None:
        for rcpt in recipients:
            if rcpt not in self.results:
                self.results[rcpt] = RecipientResult(
                    rcpt, outcome, reply, stage, possible_duplicate=possible_duplicate
                )

    def undecided(self, recipients: Sequence[str]) -> list[str]:
        return [r for r in recipients if r not in self.results]


@dataclass(frozen=True, slots=True)
class Envelope:
    """MAIL parameters chosen from what the upstream offered."""

    options: tuple[str, ...]
    encoding: str


async def run_transactions(
    smtp: aiosmtplib.SMTP,
    progress: Progress,
    pending: list[str],
    envelope: Envelope,
    timeouts: SmtpTimeouts,
    max_rcpt: int,
    *,
    reused: bool,
) -> None:
    """Send to ``pending`` in as many transactions as needed; raise ``SessionBroken``.

    Each transaction decides at least one recipient, so the loop ends.
    """
    first = True
    while pending:
        batch = pending[:max_rcpt]
        deferred = await _transaction(
            smtp, progress, pending, batch, envelope, timeouts, first_on_reused=first and reused
        )
        first = False
        pending = deferred + progress.undecided(pending[len(batch) :])


async def _transaction(
    smtp: aiosmtplib.SMTP,
    progress: Progress,
    pending: list[str],
    batch: list[str],
    envelope: Envelope,
    timeouts: SmtpTimeouts,
    *,
    first_on_reused: bool,
) -> list[str]:
    """One MAIL..dot; returns the recipients refused with "too many recipients"."""
    job = progress.job
    progress.reach(Stage.MAIL)
    try:
        await smtp.mail(
            bare_address(job.mail_from),
            options=list(envelope.options),
            encoding=envelope.encoding,
            timeout=timeouts.mail,
        )
    except SMTPResponseException as exc:
        if not _is_final_code(exc.code) or exc.code == _CLOSING:
            raise _broken(smtp, Stage.MAIL, exc, first_on_reused) from None
        # A refused sender would be refused in every later transaction too.
        progress.decide(
            pending, _outcome(exc.code), Stage.MAIL, server_reply(exc.code, exc.message)
        )
        return []
    except (ValueError, aiosmtplib.SMTPNotSupported) as exc:
        reply = local_reply(f"invalid sender address: {exc}", "5.1.7")
        progress.decide(pending, Outcome.PERMANENT, Stage.MAIL, reply)
        return []
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise _broken(smtp, Stage.MAIL, exc, first_on_reused) from None

    accepted, deferred = await _recipients(smtp, progress, batch, envelope, timeouts)
    if not accepted:
        await _reset(smtp, timeouts, Stage.RCPT)
        return deferred
    await _data(smtp, progress, accepted, timeouts)
    return deferred


async def _recipients(
    smtp: aiosmtplib.SMTP,
    progress: Progress,
    batch: list[str],
    envelope: Envelope,
    timeouts: SmtpTimeouts,
) -> tuple[list[str], list[str]]:
    progress.reach(Stage.RCPT)
    accepted: list[str] = []
    for index, rcpt in enumerate(batch):
        try:
            await smtp.rcpt(bare_address(rcpt), encoding=envelope.encoding, timeout=timeouts.rcpt)
        except SMTPResponseException as exc:
            if not _is_final_code(exc.code) or exc.code == _CLOSING:
                raise _broken(smtp, Stage.RCPT, exc) from None
            if exc.code in _TOO_MANY and accepted:
                return accepted, batch[index:]
            reply = server_reply(exc.code, exc.message)
            progress.decide([rcpt], _outcome(exc.code), Stage.RCPT, reply)
            continue
        except (ValueError, aiosmtplib.SMTPNotSupported) as exc:
            reply = local_reply(f"invalid recipient address: {exc}", "5.1.3")
            progress.decide([rcpt], Outcome.PERMANENT, Stage.RCPT, reply)
            continue
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _broken(smtp, Stage.RCPT, exc) from None
        accepted.append(rcpt)
    return accepted, []


async def _data(
    smtp: aiosmtplib.SMTP, progress: Progress, accepted: list[str], timeouts: SmtpTimeouts
) -> None:
    progress.reach(Stage.DATA)
    try:
        response = await smtp.execute_command(b"DATA", timeout=timeouts.data)
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise _broken(smtp, Stage.DATA, exc) from None
    if response.code != 354:
        if not _is_final_code(response.code) or response.code == _CLOSING:
            refusal = SMTPResponseException(response.code, response.message)
            raise _broken(smtp, Stage.DATA, refusal) from None
        reply = server_reply(response.code, response.message)
        progress.decide(accepted, _outcome(response.code), Stage.DATA, reply)
        await _reset(smtp, timeouts, Stage.DATA)
        return

    await _send_body(smtp, progress.job.data, timeouts)
    # From here on the upstream may hold the message: silence is not a failure.
    progress.reach(Stage.DOT)
    protocol = smtp.protocol
    try:
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        response = await protocol.read_response(timeout=timeouts.final_dot)
    except (aiosmtplib.SMTPException, OSError) as exc:
        smtp.close()
        if isinstance(exc, aiosmtplib.SMTPTimeoutError):
            text = f"no reply within {timeouts.final_dot:g}s after the final dot"
        elif isinstance(exc, SMTPResponseException):
            text = f"invalid reply after the final dot: {exc.message}"
        else:
            text = "connection lost after the final dot, before the reply"
        reply = local_reply(f"{text}; the message may have been delivered")
        progress.decide(accepted, Outcome.UNKNOWN, Stage.DOT, reply, possible_duplicate=True)
        raise SessionBroken(Stage.DOT, local_reply(f"not attempted: {text}")) from None

    if not _is_final_code(response.code):
        smtp.close()
        reply = protocol_error(f"reply {response.code} after the final dot: {response.message}")
        progress.decide(accepted, Outcome.UNKNOWN, Stage.DOT, reply, possible_duplicate=True)
        raise SessionBroken(Stage.DOT, reply)
    reply = server_reply(response.code, response.message)
    progress.decide(accepted, _outcome(response.code), Stage.DOT, reply)
    if response.code == _CLOSING:
        smtp.close()
        raise SessionBroken(Stage.DOT, reply)


async def _send_body(smtp: aiosmtplib.SMTP, data: bytes, timeouts: SmtpTimeouts) -> None:
    """Write the body block by block, waiting for each to leave, then the final dot.

    Waiting per block gives the RFC's data-block timeout, and it means that a connection
    lost while the body is still going out is known to have happened before the dot.
    """
    payload = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data))
    last = max(0, (len(payload) - 1) // _BLOCK * _BLOCK)
    protocol = smtp.protocol
    try:
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        for start in range(0, last, _BLOCK):
            protocol.write(payload[start : start + _BLOCK])
            await asyncio.wait_for(protocol._drain_helper(), timeouts.data_block)
        protocol.write(payload[last:] + b".\r\n")
    except TimeoutError:
        smtp.close()
        text = f"upstream stopped reading the message for {timeouts.data_block:g}s"
        raise SessionBroken(Stage.DATA, local_reply(text)) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        smtp.close()
        text = f"connection lost while sending the message, before the final dot: {exc}"
        raise SessionBroken(Stage.DATA, local_reply(text)) from None


async def _reset(smtp: aiosmtplib.SMTP, timeouts: SmtpTimeouts, stage: Stage) -> None:
    try:
        await smtp.rset(timeout=timeouts.command)
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise _broken(smtp, stage, exc) from None


def bare_address(address: str) -> str:
    """The envelope address unchanged, or ``ValueError``.

    aiosmtplib parses "Name <addr>" forms, so ``"x\\r\\nRCPT TO:<other@host>"`` would be
    silently sent as ``other@host``; an envelope address must go out exactly as given.
    """
    if parse_address(address) != address:
        raise ValueError(f"not a bare envelope address: {address!r}")
    return address


def _broken(
    smtp: aiosmtplib.SMTP, stage: Stage, exc: BaseException, first_on_reused: bool = False
) -> SessionBroken:
    smtp.close()
    if isinstance(exc, SMTPResponseException):
        if _is_final_code(exc.code):
            return SessionBroken(
                stage, server_reply(exc.code, exc.message), no_reply_at_first_mail=first_on_reused
            )
        if exc.code < 0:
            return SessionBroken(stage, protocol_error(exc.message))
        return SessionBroken(stage, protocol_error(f"unexpected reply {exc.code}: {exc.message}"))
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return SessionBroken(stage, local_reply(f"no reply at {stage.value} (timed out)"))
    text = f"connection lost at {stage.value}: {clean_text(str(exc)) or type(exc).__name__}"
    return SessionBroken(stage, local_reply(text), no_reply_at_first_mail=first_on_reused)


def _is_final_code(code: int) -> bool:
    return 200 <= code <= 299 or 400 <= code <= 599


def _outcome(code: int) -> Outcome:
    if 200 <= code <= 299:
        return Outcome.ACCEPTED
    return Outcome.PERMANENT if code >= 500 else Outcome.TEMPORARY

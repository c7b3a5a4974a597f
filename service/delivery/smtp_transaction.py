"""MAIL / RCPT / DATA on one open session, turning every reply into per-recipient results.

Per RFC 5321: a refused RCPT affects only that recipient; 452 (and 552, §4.5.3.1.10) at
RCPT means "send the rest in another transaction"; a reply to MAIL, DATA or the final dot
covers the whole transaction; losing the connection after the final dot leaves the
outcome unknown (RFC 1047), which is reported, never guessed. Where the upstream offers
PIPELINING (RFC 2920), MAIL, every RCPT and DATA go out in one write and their replies are
read in order afterwards: one round trip instead of two plus one per recipient. There, the
session is also handed on (``handoff``) as the body goes out: the next transaction's
MAIL, RCPT and DATA follow the final dot in the same write, and its replies are read after
the dot's (the message content may start a group, RFC 2920 §3.1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiosmtplib.email import parse_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from service.delivery.smtp_reply import clean_text, local_reply, protocol_error, server_reply
from service.delivery.smtp_url import SmtpTimeouts
from service.delivery.smtp_wire import Wire, WireError, WireGarbage, WireTimeout
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


@dataclass(slots=True, init=False)
class Progress:
    """The results of one ``send`` as they are decided."""

    job: Outgoing
    results: dict[str, RecipientResult] = field(default_factory=dict)
    reached: Stage = Stage.CONNECT

    def __init__(
        self,
        job: Outgoing,
        results: dict[str, RecipientResult] | None = None,
        reached: Stage = Stage.CONNECT,
    ) -> None:
        self.job = job
        self.results = {} if results is None else results
        self.reached = reached

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


@dataclass(slots=True, init=False)
class Envelope:
    """MAIL parameters chosen from what the upstream offered."""

    options: tuple[str, ...]
    encoding: str
    pipelining: bool = False

    def __init__(
        self,
        options: tuple[str, ...],
        encoding: str,
        pipelining: bool = False,
    ) -> None:
        self.options = options
        self.encoding = encoding
        self.pipelining = pipelining


async def run_transactions(
    wire: Wire,
    progress: Progress,
    pending: list[str],
    envelope: Envelope,
    timeouts: SmtpTimeouts,
    max_rcpt: int,
    *,
    reused: bool,
    handoff: Callable[[], None] | None = None,
) -> None:
    """Send to ``pending`` in as many transactions as needed; raise ``SessionBroken``.

    Each transaction decides at least one recipient, so the loop ends. ``handoff``, if
    given, is called once the session can take the next transaction (the last one here
    wrote its body and waits only for the reply to its dot); it may never be called.
    """
    first = True
    while pending:
        batch = pending[:max_rcpt]
        deferred = await _transaction(
            wire,
            progress,
            pending,
            batch,
            envelope,
            timeouts,
            first_on_reused=first and reused,
            handoff=handoff if len(pending) <= max_rcpt else None,
        )
        first = False
        pending = deferred + progress.undecided(pending[len(batch) :])


async def _transaction(
    wire: Wire,
    progress: Progress,
    pending: list[str],
    batch: list[str],
    envelope: Envelope,
    timeouts: SmtpTimeouts,
    *,
    first_on_reused: bool,
    handoff: Callable[[], None] | None,
) -> list[str]:
    """One MAIL..dot; returns the recipients refused with "too many recipients"."""
    job = progress.job
    progress.reach(Stage.MAIL)
    try:
        mail = _command(b"MAIL FROM:", job.mail_from, envelope, envelope.options)
    except ValueError as exc:
        reply = local_reply(f"invalid sender address: {exc}", "5.1.7")
        progress.decide(pending, Outcome.PERMANENT, Stage.MAIL, reply)
        return []
    rcpts: list[tuple[str, bytes]] = []
    for rcpt in batch:
        try:
            rcpts.append((rcpt, _command(b"RCPT TO:", rcpt, envelope, ())))
        except ValueError as exc:
            reply = local_reply(f"invalid recipient address: {exc}", "5.1.3")
            progress.decide([rcpt], Outcome.PERMANENT, Stage.RCPT, reply)
    if not rcpts:
        return []
    if envelope.pipelining:
        return await _pipelined(
            wire, progress, pending, mail, rcpts, timeouts, first_on_reused, handoff
        )

    wire.write(mail)
    code, text = await _reply(wire, Stage.MAIL, timeouts.mail, first_on_reused)
    if not _mail_taken(progress, pending, code, text, first_on_reused, wire):
        return []
    progress.reach(Stage.RCPT)
    accepted: list[str] = []
    for index, (rcpt, command) in enumerate(rcpts):
        wire.write(command)
        code, text = await _reply(wire, Stage.RCPT, timeouts.rcpt)
        if code in _TOO_MANY and accepted:
            await _data_step(wire, progress, accepted, timeouts)
            return [r for r, _ in rcpts[index:]]
        _rcpt_verdict(progress, rcpt, code, text, accepted, wire)
    if not accepted:
        await _reset(wire, timeouts, Stage.RCPT)
        return []
    await _data_step(wire, progress, accepted, timeouts)
    return []


async def _pipelined(
    wire: Wire,
    progress: Progress,
    pending: list[str],
    mail: bytes,
    rcpts: list[tuple[str, bytes]],
    timeouts: SmtpTimeouts,
    first_on_reused: bool,
    handoff: Callable[[], None] | None,
) -> list[str]:
    """RFC 2920: MAIL, the RCPTs and DATA in one write, then every reply in order."""
    wire.write(b"".join([mail, *(c for _, c in rcpts), b"DATA\r\n"]))
    mail_code, mail_text = await _reply(wire, Stage.MAIL, timeouts.mail, first_on_reused)
    mail_taken = _mail_taken(progress, pending, mail_code, mail_text, first_on_reused, wire)
    if mail_taken:
        progress.reach(Stage.RCPT)
    accepted: list[str] = []
    too_many: list[tuple[str, int, str]] = []
    for rcpt, _ in rcpts:
        code, text = await _reply(wire, Stage.RCPT, timeouts.rcpt)
        if not mail_taken:
            _check_open(wire, Stage.RCPT, code, text)  # refusals of a refused MAIL's RCPTs
        elif code in _TOO_MANY:
            too_many.append((rcpt, code, text))
        else:
            _rcpt_verdict(progress, rcpt, code, text, accepted, wire)
    data_code, data_text = await _reply(wire, Stage.DATA, timeouts.data)
    if not mail_taken or not accepted:
        # "Too many recipients" with none accepted is an ordinary refusal of each.
        for rcpt, code, text in too_many:
            _rcpt_verdict(progress, rcpt, code, text, accepted, wire)
        if data_code == 354:  # DATA accepted with no recipient: end it with an empty message
            wire.write(b".\r\n")
            await _reply(wire, Stage.DATA, timeouts.final_dot)
        else:
            _check_open(wire, Stage.DATA, data_code, data_text)
            if mail_taken:
                await _reset(wire, timeouts, Stage.DATA)
        return []
    await _after_data_reply(
        wire,
        progress,
        accepted,
        timeouts,
        data_code,
        data_text,
        None if too_many else handoff,  # the deferred recipients need this session next
    )
    return [rcpt for rcpt, _, _ in too_many]


def _check_open(wire: Wire, stage: Stage, code: int, text: str) -> None:
    """Raise ``SessionBroken`` for a reply that ends the session (421, or not a reply code)."""
    if not _is_final_code(code) or code == _CLOSING:
        raise _broken_by_code(wire, stage, code, text)


def _mail_taken(
    progress: Progress,
    pending: list[str],
    code: int,
    text: str,
    first_on_reused: bool,
    wire: Wire,
) -> bool:
    if 200 <= code <= 299:
        return True
    if not _is_final_code(code) or code == _CLOSING:
        raise _broken_by_code(wire, Stage.MAIL, code, text, first_on_reused)
    # A refused sender would be refused in every later transaction too.
    progress.decide(pending, _outcome(code), Stage.MAIL, server_reply(code, text))
    return False


def _rcpt_verdict(
    progress: Progress, rcpt: str, code: int, text: str, accepted: list[str], wire: Wire
) -> None:
    if 200 <= code <= 299:
        accepted.append(rcpt)
        return
    _check_open(wire, Stage.RCPT, code, text)
    progress.decide([rcpt], _outcome(code), Stage.RCPT, server_reply(code, text))


async def _data_step(
    wire: Wire, progress: Progress, accepted: list[str], timeouts: SmtpTimeouts
) -> None:
    progress.reach(Stage.DATA)
    wire.write(b"DATA\r\n")
    code, text = await _reply(wire, Stage.DATA, timeouts.data)
    await _after_data_reply(wire, progress, accepted, timeouts, code, text)


async def _after_data_reply(
    wire: Wire,
    progress: Progress,
    accepted: list[str],
    timeouts: SmtpTimeouts,
    code: int,
    text: str,
    handoff: Callable[[], None] | None = None,
) -> None:
    progress.reach(Stage.DATA)
    if code != 354:
        _check_open(wire, Stage.DATA, code, text)
        progress.decide(accepted, _outcome(code), Stage.DATA, server_reply(code, text))
        await _reset(wire, timeouts, Stage.DATA)
        return

    await _send_body(wire, progress.job.data, timeouts, handoff)
    # From here on the upstream may hold the message: silence is not a failure.
    progress.reach(Stage.DOT)
    try:
        code, text = await wire.reply(timeouts.final_dot)
    except WireError as exc:
        wire.close()
        if isinstance(exc, WireTimeout):
            text = f"no reply within {timeouts.final_dot:g}s after the final dot"
        elif isinstance(exc, WireGarbage):
            text = f"invalid reply after the final dot: {exc}"
        else:
            text = "connection lost after the final dot, before the reply"
        reply = local_reply(f"{text}; the message may have been delivered")
        progress.decide(accepted, Outcome.UNKNOWN, Stage.DOT, reply, possible_duplicate=True)
        raise SessionBroken(Stage.DOT, local_reply(f"not attempted: {text}")) from None

    if not _is_final_code(code):
        wire.close()
        reply = protocol_error(f"reply {code} after the final dot: {text}")
        progress.decide(accepted, Outcome.UNKNOWN, Stage.DOT, reply, possible_duplicate=True)
        raise SessionBroken(Stage.DOT, reply)
    reply = server_reply(code, text)
    progress.decide(accepted, _outcome(code), Stage.DOT, reply)
    if code == _CLOSING:
        wire.close()
        raise SessionBroken(Stage.DOT, reply)


async def _send_body(
    wire: Wire, data: bytes, timeouts: SmtpTimeouts, handoff: Callable[[], None] | None
) -> None:
    """Write the body block by block, waiting for each to leave, then the final dot.

    Waiting per block gives the RFC's data-block timeout, and it means that a connection
    lost while the body is still going out is known to have happened before the dot. With
    the last block written, ``handoff`` lets the next transaction start; that block is
    gathered, so the next transaction's commands, written before this step of the loop
    ends, leave in the same segment.
    """
    payload = wire_payload(data)
    last = max(0, (len(payload) - 1) // _BLOCK * _BLOCK)
    try:
        for start in range(0, last, _BLOCK):
            wire.write(payload[start : start + _BLOCK])
            await wire.drain(timeouts.data_block)
        if handoff is None:
            wire.write(payload[last:] + b".\r\n")
        else:
            # Handed on first: the next transaction's task is then woken before the
            # gathered write is flushed, and writes its commands in time to join it.
            handoff()
            wire.write(payload[last:] + b".\r\n", gather=True)
    except WireTimeout:
        wire.close()
        text = f"upstream stopped reading the message for {timeouts.data_block:g}s"
        raise SessionBroken(Stage.DATA, local_reply(text)) from None
    except WireError as exc:
        wire.close()
        text = f"connection lost while sending the message, before the final dot: {exc}"
        raise SessionBroken(Stage.DATA, local_reply(text)) from None


def wire_payload(data: bytes) -> bytes:
    """``data`` with CRLF line endings and dot-stuffing, ready to follow DATA."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = normalize_message_line_endings(data)
    if data.startswith(b".") or b"\n." in data:
        data = PERIOD_REGEX.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


async def _reset(wire: Wire, timeouts: SmtpTimeouts, stage: Stage) -> None:
    wire.write(b"RSET\r\n")
    code, text = await _reply(wire, stage, timeouts.command)
    if not 200 <= code <= 299:
        raise _broken_by_code(wire, stage, code, text)


async def _reply(
    wire: Wire, stage: Stage, limit: float, first_on_reused: bool = False
) -> tuple[int, str]:
    try:
        return await wire.reply(limit)
    except WireTimeout:
        wire.close()
        raise SessionBroken(stage, local_reply(f"no reply at {stage.value} (timed out)")) from None
    except WireGarbage as garbage:  # a name per clause: compiled, one name has one type
        wire.close()
        raise SessionBroken(stage, protocol_error(str(garbage))) from None
    except WireError as lost:
        wire.close()
        text = f"connection lost at {stage.value}: {clean_text(str(lost))}"
        raise SessionBroken(
            stage, local_reply(text), no_reply_at_first_mail=first_on_reused
        ) from None


# RFC 5321 §4.1.2 dot-atom local part and an LDH domain: what ``parse_address`` returns
# unchanged, checked without the email package's parser (a tenth of the worker's CPU).
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def bare_address(address: str) -> str:
    """The envelope address unchanged, or ``ValueError``.

    aiosmtplib parses "Name <addr>" forms, so ``"x\\r\\nRCPT TO:<other@host>"`` would be
    silently sent as ``other@host``; an envelope address must go out exactly as given.
    """
    if _PLAIN_ADDRESS.fullmatch(address) is None and parse_address(address) != address:
        raise ValueError(f"not a bare envelope address: {address!r}")
    return address


def _command(verb: bytes, address: str, envelope: Envelope, options: Sequence[str]) -> bytes:
    """``MAIL FROM:<a> OPTS`` / ``RCPT TO:<a>`` as bytes, or ``ValueError``."""
    try:
        encoded = bare_address(address).encode(envelope.encoding)
    except UnicodeEncodeError:
        raise ValueError(f"{address!r} needs SMTPUTF8") from None
    line = verb + b"<" + encoded + b">"
    if options:
        line += b" " + " ".join(options).encode("ascii")
    if b"\r" in line or b"\n" in line:
        raise ValueError("command contains a line break")
    return line + b"\r\n"


def _broken_by_code(
    wire: Wire, stage: Stage, code: int, text: str, first_on_reused: bool = False
) -> SessionBroken:
    wire.close()
    if _is_final_code(code):
        return SessionBroken(
            stage, server_reply(code, text), no_reply_at_first_mail=first_on_reused
        )
    return SessionBroken(stage, protocol_error(f"unexpected reply {code}: {text}"))


def _is_final_code(code: int) -> bool:
    return 200 <= code <= 299 or 400 <= code <= 599


def _outcome(code: int) -> Outcome:
    if 200 <= code <= 299:
        return Outcome.ACCEPTED
    return Outcome.PERMANENT if code >= 500 else Outcome.TEMPORARY

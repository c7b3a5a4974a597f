"""The seam between the delivery worker and the wire.

A transport takes one outgoing SMTP transaction (envelope + exact bytes) and returns a
result for every recipient. Expected outcomes — refusals, timeouts, dropped connections —
are values here, never exceptions: the worker only decides what each outcome means for the
recipient's state (see ``service.delivery.decide``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Stage(StrEnum):
    """How far an SMTP session got; recorded on every attempt."""

    CONNECT = "connect"
    GREETING = "greeting"
    HELO = "helo"
    TLS = "tls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    DOT = "dot"


class Outcome(StrEnum):
    """What the upstream said about one recipient."""

    ACCEPTED = "accepted"  # 2xx after the final dot
    TEMPORARY = "temporary"  # 4xx, timeouts, connection and protocol errors
    PERMANENT = "permanent"  # 5xx
    UNKNOWN = "unknown"  # lost after the final dot: may have been delivered (RFC 1047)


@dataclass(slots=True, init=False)  # a value, not frozen: see service/native.py
class Reply:
    """An SMTP reply (or a local description of why there was none)."""

    code: int | None
    enhanced: str | None
    text: str

    def __init__(
        self,
        code: int | None,
        enhanced: str | None,
        text: str,
    ) -> None:
        self.code = code
        self.enhanced = enhanced
        self.text = text

    @classmethod
    def local(cls, text: str) -> Reply:
        return cls(code=None, enhanced=None, text=text)


@dataclass(slots=True, init=False)  # a value, not frozen: see service/native.py
class Outgoing:
    """One SMTP transaction to attempt: the envelope and the exact bytes to send."""

    mail_from: str
    recipients: Sequence[str]
    data: bytes
    # Hints for the upstream (RFC 6531 / RFC 6152).
    smtputf8: bool = False
    eight_bit: bool = False
    # Called (at most once, before the result) when the transport can take the next send
    # although this one still waits for the upstream's last reply.
    on_handoff: Callable[[], None] | None = field(default=None, compare=False)

    def __init__(
        self,
        mail_from: str,
        recipients: Sequence[str],
        data: bytes,
        smtputf8: bool = False,
        eight_bit: bool = False,
        on_handoff: Callable[[], None] | None = None,
    ) -> None:
        self.mail_from = mail_from
        self.recipients = recipients
        self.data = data
        self.smtputf8 = smtputf8
        self.eight_bit = eight_bit
        self.on_handoff = on_handoff


@dataclass(slots=True, init=False)  # a value, not frozen: see service/native.py
class RecipientResult:
    recipient: str
    outcome: Outcome
    reply: Reply
    stage: Stage
    possible_duplicate: bool = False

    def __init__(
        self,
        recipient: str,
        outcome: Outcome,
        reply: Reply,
        stage: Stage,
        possible_duplicate: bool = False,
    ) -> None:
        self.recipient = recipient
        self.outcome = outcome
        self.reply = reply
        self.stage = stage
        self.possible_duplicate = possible_duplicate


@dataclass(slots=True, init=False)  # a value, not frozen: see service/native.py
class SendResult:
    results: tuple[RecipientResult, ...]
    duration: float
    stage: Stage
    extra: dict[str, str] = field(default_factory=dict)

    def __init__(
        self,
        results: tuple[RecipientResult, ...],
        duration: float,
        stage: Stage,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.results = results
        self.duration = duration
        self.stage = stage
        self.extra = {} if extra is None else extra

    def for_recipient(self, rcpt: str) -> RecipientResult:
        for r in self.results:
            if r.recipient == rcpt:
                return r
        raise KeyError(rcpt)


class Transport(Protocol):
    """Anything that can carry an ``Outgoing`` transaction."""

    async def send(self, job: Outgoing) -> SendResult: ...

    async def aclose(self) -> None: ...

"""Parse bounce and complaint reports into one shape.

Recognised, in order: RFC 3464 DSNs (``multipart/report; report-type=delivery-status``,
also RFC 6533 global DSNs), RFC 5965 ARF complaints (``report-type=feedback-report``),
then a heuristic for common non-standard bounces (qmail, Exim, Exchange/Gmail-like text).
Parsing never raises for malformed input: anything unrecognised is ``ReportKind.UNKNOWN``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email
import email.policy
import quopri
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses
from enum import StrEnum

from service.bounces.classify import BounceCategory, classify, find_enhanced_code
from service.bounces.heuristics import parse_text_bounce


class ReportKind(StrEnum):
    BOUNCE = "bounce"
    DELAY = "delay"
    COMPLAINT = "complaint"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class RecipientReport:
    address: str
    action: str  # failed | delayed | delivered | relayed | expanded | complaint
    status: str | None = None  # enhanced code, e.g. "5.1.1"
    diagnostic: str | None = None
    category: BounceCategory | None = None  # None for non-failure actions
    original_address: str | None = None
    remote_mta: str | None = None


@dataclass(frozen=True)
class BounceReport:
    kind: ReportKind
    format: str  # dsn | arf | qmail | exim | text | none
    recipients: tuple[RecipientReport, ...] = ()
    report_message_id: str | None = None  # the report's own Message-ID, for idempotence
    original_message_id: str | None = None  # Message-ID of the message that bounced
    original_envelope_id: str | None = None  # DSN Original-Envelope-Id (ENVID)
    # Addresses that may carry our return-path token: the report's To, Delivered-To,
    # X-Original-To, Envelope-To, ARF Original-Mail-From and the returned Return-Path.
    envelope_addresses: tuple[str, ...] = ()
    reporting_mta: str | None = None
    feedback_type: str | None = None
    subject: str | None = None
    size: int = 0  # bytes of the raw report


_ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_MESSAGE_ID = re.compile(r"^Message-ID:[ \t]*(?:\r?\n[ \t]+)?(<[^>\s]+>)", re.I | re.M)
_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_HEADER_TYPES = ("text/rfc822-headers", "text/global-headers")
_MESSAGE_TYPES = ("message/rfc822", "message/global")


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _typed_value(value: str | None) -> str | None:
    """``rfc822; a@b`` -> ``a@b``; ``smtp; 550 …`` -> ``550 …``."""
    if not value:
        return None
    _, sep, rest = value.partition(";")
    result = (rest if sep else value).strip().strip("<>").strip()
    return result or None


def _message_id(value: object) -> str | None:
    text = _text(value)
    if not text:
        return None
    match = re.search(r"<[^>\s]+>", text)
    return match.group(0) if match else text


def _decoded_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, errors="replace")
        except LookupError:
            return payload.decode("utf-8", errors="replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _field_blocks(text: str) -> list[dict[str, str]]:
    """Split ``Name: value`` blocks separated by blank lines (with header folding)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
        elif line[0] in " \t" and last:
            current[last] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            last = name.strip().lower()
            current[last] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _unescape(text: str) -> str:
    # message_from_bytes keeps undecodable 8-bit bytes as surrogates; recover UTF-8 text.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _message_text(message: Message) -> str:
    """Headers and body as parsed, without re-encoding (as_string mangles 8-bit text)."""
    head = "\n".join(f"{name}: {value}" for name, value in message.raw_items())
    body = message.get_payload(decode=True)  # raw bytes; str payloads lose 8-bit text
    text = body.decode("utf-8", "surrogateescape") if isinstance(body, bytes) else ""
    return head + "\n\n" + text


def _status_blocks(part: Message) -> list[dict[str, str]]:
    payload = part.get_payload()
    encoding = str(part.get("Content-Transfer-Encoding") or "").strip().lower()
    if isinstance(payload, list) and encoding in ("base64", "quoted-printable"):
        # Non-conforming but seen in the wild: an encoded message/* part.
        encoded = "".join(_message_text(m) for m in payload if isinstance(m, Message))
        if encoding == "base64":
            compact = "".join(encoded.split())
            try:
                decoded = base64.b64decode(compact + "=" * (-len(compact) % 4))
            except (binascii.Error, ValueError):
                return []
        else:
            decoded = quopri.decodestring(encoded.encode("ascii", "replace"))
        return _field_blocks(decoded.decode("utf-8", "replace"))
    if isinstance(payload, list) and part.get_content_type() == "message/delivery-status":
        return [
            {k.lower(): _text(v) or "" for k, v in block.items()}
            for block in payload
            if isinstance(block, Message)
        ]
    if isinstance(payload, list):  # global DSN: parsed as one message, re-split it
        text = "\n\n".join(_message_text(m) for m in payload if isinstance(m, Message))
        return _field_blocks(_unescape(text))
    return _field_blocks(_decoded_text(part))


def _walk(message: Message) -> Iterable[Message]:
    """Every part, without descending into returned messages."""
    yield message
    payload = message.get_payload()
    if message.is_multipart() and isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                yield from _walk(sub)


def _returned_headers(message: Message) -> Message | None:
    for part in _walk(message):
        ctype = part.get_content_type()
        if ctype in _MESSAGE_TYPES:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if ctype in _HEADER_TYPES:
            return HeaderParser().parsestr(_decoded_text(part).lstrip())
    return None


def _addresses(values: Iterable[str | None]) -> list[str]:
    found: list[str] = []
    for _, addr in getaddresses([v for v in values if v]):
        if "@" in addr and addr not in found:
            found.append(addr)
    return found


def _envelope_addresses(message: Message, extra: Iterable[str | None]) -> tuple[str, ...]:
    values: list[str | None] = []
    for name in _ENVELOPE_HEADERS:
        values.extend(str(v) for v in message.get_all(name, []))
    values.extend(extra)
    return tuple(_addresses(values))


def _parse_dsn(message: Message, part: Message) -> tuple[list[RecipientReport], dict[str, str]]:
    blocks = _status_blocks(part)
    per_message = blocks[0] if blocks and "final-recipient" not in blocks[0] else {}
    recipients = []
    for block in blocks:
        address = _typed_value(block.get("final-recipient") or block.get("original-recipient"))
        if not address:
            continue
        action = (block.get("action") or "failed").strip().lower()
        diagnostic = _typed_value(block.get("diagnostic-code"))
        status = find_enhanced_code(block.get("status")) or find_enhanced_code(diagnostic)
        failed = action in ("failed", "delayed")
        recipients.append(
            RecipientReport(
                address=address,
                action=action,
                status=status,
                diagnostic=diagnostic,
                category=classify(status, diagnostic) if failed else None,
                original_address=_typed_value(block.get("original-recipient")),
                remote_mta=_typed_value(block.get("remote-mta")),
            )
        )
    return recipients, per_message


def _dsn_kind(recipients: list[RecipientReport]) -> ReportKind:
    actions = {r.action for r in recipients}
    if "failed" in actions:
        return ReportKind.BOUNCE
    if "delayed" in actions:
        return ReportKind.DELAY
    return ReportKind.UNKNOWN


def _feedback_fields(part: Message) -> dict[str, str]:
    payload = part.get_payload()
    if isinstance(payload, list):
        fields: dict[str, str] = {}
        for sub in payload:
            if isinstance(sub, Message):
                for name, value in sub.items():
                    fields.setdefault(name.lower(), _text(value) or "")
        return fields
    blocks = _field_blocks(_decoded_text(part))
    return blocks[0] if blocks else {}


def parse_report(raw: bytes) -> BounceReport:
    """Parse one report message. Never raises on malformed mail."""
    return dataclasses.replace(_parse(raw), size=len(raw))


def _parse(raw: bytes) -> BounceReport:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    report_id = _message_id(message.get("Message-ID"))
    subject = _text(message.get("Subject"))
    returned = _returned_headers(message)
    returned_id = _message_id(returned.get("Message-ID")) if returned is not None else None
    returned_path = [str(returned.get("Return-Path") or "")] if returned is not None else []

    ctype = message.get_content_type()
    report_type = (message.get_param("report-type") or "") if ctype == "multipart/report" else ""
    parts = list(_walk(message))

    dsn_part = next((p for p in parts if p.get_content_type() in _DSN_TYPES), None)
    if dsn_part is not None and str(report_type).lower() != "feedback-report":
        recipients, per_message = _parse_dsn(message, dsn_part)
        if recipients:
            return BounceReport(
                kind=_dsn_kind(recipients),
                format="dsn",
                recipients=tuple(recipients),
                original_message_id=returned_id,
                original_envelope_id=_typed_value(per_message.get("original-envelope-id")),
                envelope_addresses=_envelope_addresses(message, returned_path),
                reporting_mta=_typed_value(per_message.get("reporting-mta")),
                report_message_id=report_id,
                subject=subject,
            )

    arf_part = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if arf_part is not None:
        fields = _feedback_fields(arf_part)
        feedback_type = (fields.get("feedback-type") or "abuse").strip().lower()
        rcpts = _addresses([fields.get("original-rcpt-to")])
        if not rcpts and returned is not None:
            rcpts = _addresses([str(returned.get("To") or "")])
        entries = tuple(
            RecipientReport(
                address=addr,
                action="complaint",
                diagnostic=feedback_type,
                category=BounceCategory.COMPLAINT,
            )
            for addr in rcpts
        )
        mail_from = fields.get("original-mail-from")
        return BounceReport(
            kind=ReportKind.COMPLAINT,
            format="arf",
            recipients=entries,
            original_message_id=returned_id,
            envelope_addresses=_envelope_addresses(message, [mail_from, *returned_path]),
            reporting_mta=_typed_value(fields.get("reporting-mta")),
            feedback_type=feedback_type,
            report_message_id=report_id,
            subject=subject,
        )

    body = "\n".join(
        _decoded_text(p)
        for p in parts
        if p.get_content_maintype() == "text" and p.get_content_type() not in _HEADER_TYPES
    )
    guess = parse_text_bounce(
        body,
        subject=subject or "",
        sender=str(message.get("From") or ""),
        ignore=_addresses([str(message.get("From") or ""), str(message.get("To") or "")]),
    )
    if returned_id is None and guess is not None:
        returned_id = next(iter(_MESSAGE_ID.findall(guess.returned_text)), None)
    if returned_id is None and guess is not None:
        # Exim and others put the bounced message's id in References / In-Reply-To.
        refs = str(message.get("In-Reply-To") or message.get("References") or "")
        returned_id = next(iter(re.findall(r"<[^>\s]+>", refs)), None)
    if guess is None or not guess.recipients:
        return BounceReport(
            kind=ReportKind.UNKNOWN,
            format="none",
            original_message_id=returned_id,
            envelope_addresses=_envelope_addresses(message, returned_path),
            report_message_id=report_id,
            subject=subject,
        )
    entries = tuple(
        RecipientReport(
            address=r.address,
            action="delayed" if guess.delayed else "failed",
            status=r.status,
            diagnostic=r.diagnostic,
            category=classify(r.status, r.diagnostic),
        )
        for r in guess.recipients
    )
    return BounceReport(
        kind=ReportKind.DELAY if guess.delayed else ReportKind.BOUNCE,
        format=guess.format,
        recipients=entries,
        original_message_id=returned_id if returned_id != report_id else None,
        envelope_addresses=_envelope_addresses(message, returned_path),
        report_message_id=report_id,
        subject=subject,
    )

"""Checking a client's own RFC 5322 message before it is stored and sent as given.

Pure code. The bytes are kept as they are with two exceptions, both documented in the API:
line endings become CRLF (bare LF is how most programs write files), and a message without
Message-ID or Date gets them added at the top, since RFC 5322 wants both and status
lookups and bounce matching key on the Message-ID. Nothing else is rewritten.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.parser import BytesHeaderParser
from email.utils import format_datetime

from service.domain.errors import FieldError, InvalidRequest

MAX_LINE = 998
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")


@dataclass(frozen=True, slots=True)
class RawMessage:
    mime: bytes
    subject: str
    message_id: str
    eight_bit_headers: bool


def decode(raw: str, loc: tuple[str | int, ...] = ("raw",)) -> bytes:
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest([FieldError(loc, "must be valid, padded base64")]) from exc


def normalise(
    data: bytes,
    *,
    message_id: str,
    date: datetime,
    max_bytes: int,
    loc: tuple[str | int, ...] = ("raw",),
) -> RawMessage:
    """Check and normalise ``data``; raises ``InvalidRequest`` naming what is wrong."""

    def bad(msg: str) -> InvalidRequest:
        return InvalidRequest([FieldError(loc, msg)])

    if not data.strip():
        raise bad("the message is empty")
    if len(data) > max_bytes:
        raise bad(f"the message is larger than {max_bytes} bytes")
    if b"\x00" in data:
        raise bad("NUL bytes are not allowed in a message")
    text = data.replace(b"\r\n", b"\n")
    if b"\r" in text:
        raise bad("bare CR (a CR not followed by LF) is not allowed")
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if any(len(line) > MAX_LINE for line in lines):
        raise bad(f"lines are limited to {MAX_LINE} octets (RFC 5322 2.1.1)")
    head_end = lines.index(b"") if b"" in lines else len(lines)
    head = lines[:head_end]
    if not head or not _HEADER_LINE.match(head[0]):
        raise bad("the message must start with a header field")
    for line in head:
        if not (_HEADER_LINE.match(line) or line[:1] in (b" ", b"\t")):
            raise bad(f"malformed header line: {line[:60]!r}")
    parsed = BytesHeaderParser(policy=policy.default).parsebytes(b"\r\n".join(head) + b"\r\n")
    if parsed["From"] is None:
        raise bad("a From header is required (RFC 5322 3.6)")
    added: list[bytes] = []
    found_id = parsed["Message-ID"]
    if found_id is None:
        added.append(b"Message-ID: " + message_id.encode())
    else:
        message_id = str(found_id).strip()
    if parsed["Date"] is None:
        added.append(b"Date: " + format_datetime(date).encode())
    mime = b"\r\n".join([*added, *lines]) + b"\r\n"
    try:
        subject = str(parsed["Subject"] or "")
    except Exception:  # a header the parser cannot decode still goes out as given
        subject = ""
    return RawMessage(
        mime=mime,
        subject=subject[:998],
        message_id=message_id[:255],
        eight_bit_headers=any(b >= 0x80 for line in head for b in line),
    )

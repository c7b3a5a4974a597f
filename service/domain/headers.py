"""Rules for header names and values: the first defence against header injection."""

from __future__ import annotations

import re
import unicodedata
from email.errors import HeaderParseError
from email.header import decode_header

# RFC 5322 field names: printable US-ASCII except colon.
_FIELD_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]{1,76}$")

# Headers Kirim writes itself, or that would change the envelope or the MIME structure.
FORBIDDEN_HEADERS = frozenset(
    h.lower()
    for h in (
        "Bcc",
        "Cc",
        "To",
        "From",
        "Sender",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "Content-ID",
        "Return-Path",
        "Received",
        "DKIM-Signature",
        "Delivered-To",
        "X-Original-To",
    )
)

MAX_HEADER_VALUE = 998 - 80  # leaves room for the name within the RFC 5322 line limit


def unsafe_text_reason(value: str) -> str | None:
    """Why ``value`` cannot go into a header, or None if it can.

    Refuses every control character (CR, LF, NUL, …) and the Unicode line and paragraph
    separators, in the text itself and in any RFC 2047 encoded word it contains.
    """
    # Printable text (no Cc, Zl or Zp character: the ones refused below) without encoded
    # words is the usual case; str.isprintable decides it in C.
    if value.isprintable() and "=?" not in value:
        return None
    return _walk(value)


def _walk(value: str) -> str | None:
    for text in _with_decoded_words(value):
        for ch in text:
            if ch in "\r\n":
                return "line breaks are not allowed"
            if ch == "\x00":
                return "NUL characters are not allowed"
            cat = unicodedata.category(ch)
            if cat == "Cc" and ch != "\t":
                return "control characters are not allowed"
            if cat in ("Zl", "Zp") or ch == "\u0085":
                return "line separators are not allowed"
    return None


def _with_decoded_words(value: str) -> list[str]:
    if "=?" not in value:
        return [value]
    try:
        parts = decode_header(value)
    except (HeaderParseError, ValueError, LookupError):
        return [value]
    decoded: list[str] = [value]
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            try:
                decoded.append(chunk.decode(charset or "ascii", errors="replace"))
            except LookupError:
                decoded.append(chunk.decode("latin-1"))
        else:
            decoded.append(chunk)
    return decoded


def header_name_reason(name: str) -> str | None:
    if not _FIELD_NAME.match(name):
        return "header names must be printable ASCII without spaces or colons"
    if name.lower() in FORBIDDEN_HEADERS:
        return f"the {name} header is set by Kirim and cannot be given"
    return None

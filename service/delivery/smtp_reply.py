"""Turning raw upstream replies into stored ``Reply`` values and outcomes.

Replies are untrusted text that ends up in the database, the API and webhooks: they are
truncated and stripped of control characters here, once.
"""

from __future__ import annotations

import re

from service.delivery.transport import Outcome, Reply

MAX_REPLY_TEXT = 500
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean_text(text: str, limit: int = MAX_REPLY_TEXT) -> str:
    """Collapse control characters (and multiline breaks) to one space and truncate."""
    cleaned = _CONTROL.sub(" ", text).strip()
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 3].rstrip() + "..."
    return cleaned


def parse_enhanced(text: str) -> str | None:
    """The RFC 3463 code at the start of the reply text, if any (stored as data only)."""
    match = _ENHANCED.match(text.lstrip())
    if match is None:
        return None
    return ".".join(match.groups())


def server_reply(code: int, message: str) -> Reply:
    """A reply the upstream sent; ``code`` outside 200-599 is kept as a local protocol error."""
    if not 200 <= code <= 599:
        return protocol_error(f"invalid reply code {code}: {message}")
    return Reply(code=code, enhanced=parse_enhanced(message), text=clean_text(message))


def protocol_error(detail: str) -> Reply:
    return Reply.local(clean_text(f"protocol error: {detail}"))


def local_reply(text: str, enhanced: str | None = None) -> Reply:
    return Reply(code=None, enhanced=enhanced, text=clean_text(text))


def outcome_of(code: int) -> Outcome:
    """RFC 5321 §4.2.1: decide by the first digit of the basic code only."""
    if 200 <= code <= 299:
        return Outcome.ACCEPTED
    if 500 <= code <= 599:
        return Outcome.PERMANENT
    # 4xx, and anything the RFC does not define, is retried rather than bounced.
    return Outcome.TEMPORARY

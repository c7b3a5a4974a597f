"""Heuristics for bounces that are not RFC 3464 DSNs (qmail, Exim, Exchange/Gmail text).

Strategy: cut the body at the returned-message marker, decide whether it looks like a
bounce at all (sender, subject, known phrases, status codes), then take recipients from
the MTA's known layout (qmail ``<addr>:`` blocks, Exim's indented list) or, failing
that, every address in the human-readable text, each paired with the nearest status code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.bounces.classify import ENHANCED_CODE

_RETURNED_MARKERS = re.compile(
    r"^(?:--- Below this line is a copy of the message"
    r"|-+ ?This is a copy of the message"
    r"|-+ ?The header of the original message"
    r"|-+ ?Original message"
    r"|Original message headers:"
    r"|-+ ?Below this line is a copy)",
    re.I | re.M,
)
_ADDRESS = re.compile(r"[A-Za-z0-9._%+'=/-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_DAEMON = re.compile(r"mailer-daemon|postmaster|mail delivery (subsystem|system)", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status notification|failure|has failed|incomplete)"
    r"|mail delivery failed|returned mail|failure notice|delivery delayed|not delivered"
    r"|warning: message .* delayed|returned to sender|could not be delivered",
    re.I,
)
_BOUNCE_TEXT = re.compile(
    r"qmail-send program|could not be delivered|wasn't delivered|couldn't be delivered"
    r"|delivery has failed|permanent error|address\(es\) failed|not yet been delivered"
    r"|unable to deliver|undeliverable|delivery to the following recipient",
    re.I,
)
_DELAY_TEXT = re.compile(
    r"not yet been delivered|will (continue to )?(re)?try|still trying|delivery (is )?delayed"
    r"|temporary (problem|failure)|has been delayed|delivery incomplete",
    re.I,
)
_QMAIL_RECIPIENT = re.compile(r"^<([^<>\s]+@[^<>\s]+)>:[ \t]*$", re.M)
_EXIM_LIST = re.compile(
    r"(?:address\(es\) failed|not yet been delivered (?:to the following|is:|are:)|"
    r"could not be delivered to one or more)[^\n]*\n",
    re.I,
)
_EXIM_RECIPIENT = re.compile(r"^[ \t]{1,2}<?([^<>\s]+@[^<>\s]+?)>?[ \t]*$")
_HEADER_LINE = re.compile(r"^(message-id|in-reply-to|references|from|to)\s*:", re.I)


@dataclass(frozen=True)
class TextRecipient:
    address: str
    status: str | None
    diagnostic: str | None


@dataclass(frozen=True)
class TextBounce:
    format: str  # qmail | exim | text
    delayed: bool
    recipients: tuple[TextRecipient, ...]
    returned_text: str


def _code(text: str) -> str | None:
    match = ENHANCED_CODE.search(text)
    return ".".join(match.groups()) if match else None


def _code_line(text: str) -> str | None:
    for line in text.splitlines():
        if ENHANCED_CODE.search(line):
            return " ".join(line.split())
    return None


def _squash(text: str) -> str | None:
    joined = " ".join(text.split())
    return joined or None


def _qmail(human: str) -> list[TextRecipient]:
    found = []
    matches = list(_QMAIL_RECIPIENT.finditer(human))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(human)
        block = human[match.end() : end].split("\n\n")[0]
        code = _code(block)
        found.append(TextRecipient(match.group(1), code, _squash(block)))
    return found


def _exim(human: str) -> list[TextRecipient]:
    header = _EXIM_LIST.search(human)
    if header is None:
        return []
    found: list[TextRecipient] = []
    address: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if address:
            text = "\n".join(lines)
            found.append(TextRecipient(address, _code(text), _squash(text)))

    for line in human[header.end() :].splitlines():
        match = _EXIM_RECIPIENT.match(line)
        if match and "@" in match.group(1):
            flush()
            address, lines = match.group(1).rstrip(":"), []
        elif line.startswith((" ", "\t")) and address:
            lines.append(line.strip())
        elif line.strip() and (found or address):
            break
    flush()
    return found


def _generic(human: str, ignore: set[str]) -> list[TextRecipient]:
    first_seen: dict[str, tuple[int, str]] = {}
    for line_match in re.finditer(r"^.*$", human, re.M):
        line = line_match.group(0)
        if _HEADER_LINE.match(line):
            continue
        for match in _ADDRESS.finditer(line):
            address = match.group(0).rstrip(".")
            key = address.lower()
            if key in ignore or _DAEMON.search(address) or key in first_seen:
                continue
            first_seen[key] = (line_match.start() + match.start(), address)
    ordered = sorted(first_seen.values())
    global_code, global_line = _code(human), _code_line(human)
    found = []
    for index, (start, address) in enumerate(ordered):
        end = ordered[index + 1][0] if index + 1 < len(ordered) else len(human)
        segment = human[start:end]
        code = _code(segment) or global_code
        diagnostic = _code_line(segment) or global_line or _squash(segment.split("\n\n")[0])
        found.append(TextRecipient(address, code, diagnostic))
    return found


def parse_text_bounce(
    body: str, *, subject: str, sender: str, ignore: list[str]
) -> TextBounce | None:
    """Recognise a non-standard bounce in plain text, or return None."""
    text = body.replace("\r\n", "\n")
    marker = _RETURNED_MARKERS.search(text)
    human, returned = (text[: marker.start()], text[marker.end() :]) if marker else (text, "")
    looks_like_bounce = bool(
        _DAEMON.search(sender) or _BOUNCE_SUBJECT.search(subject) or _BOUNCE_TEXT.search(human)
    )
    if not looks_like_bounce:
        return None

    if "qmail-send program" in human:
        fmt, recipients = "qmail", _qmail(human)
    elif "mail delivery software" in human.lower() and _EXIM_LIST.search(human):
        fmt, recipients = "exim", _exim(human)
    else:
        fmt, recipients = "text", []
    if not recipients:
        recipients = _generic(human, {a.lower() for a in ignore})
        fmt = fmt if recipients else "none"

    classes = {r.status[0] for r in recipients if r.status}
    if "5" in classes:
        delayed = False
    elif "4" in classes:
        delayed = True
    else:
        delayed = bool(_DELAY_TEXT.search(subject) or _DELAY_TEXT.search(human))
    return TextBounce(fmt, delayed, tuple(recipients), returned)

"""Logging set-up for the CLI entry points, with secrets redacted from every record.

Redaction happens when a record is created (a log-record factory), so it covers every
handler, including the ones uvicorn installs after ``setup`` ran, and exception text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from service.log_output import GatheredStreamHandler

REDACTED = "[redacted]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # API keys and webhook secrets by their type prefixes.
    (re.compile(r"kirim_[A-Za-z0-9_\-]{6,}"), "kirim_" + REDACTED),
    (re.compile(r"whsec_[A-Za-z0-9+/=_\-]{6,}"), "whsec_" + REDACTED),
    # Authorization headers and bearer tokens, however they are quoted.
    (
        re.compile(r"(?i)(bearer|basic)(\s+|['\"],\s*['\"]?)[A-Za-z0-9._~+/=\-]{4,}"),
        r"\1 " + REDACTED,
    ),
    (
        re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*(?:b(?=['\"]))?['\"]?)[^'\"\r\n]+"),
        r"\1" + REDACTED,
    ),
    # SMTP AUTH with an initial response (PLAIN, LOGIN, XOAUTH2, ...): base64 credentials.
    (re.compile(r"(?i)(AUTH\s+[A-Z0-9_\-]+\s+)[A-Za-z0-9+/=]{4,}"), r"\1" + REDACTED),
    # Passwords in URLs: scheme://user:password@host.
    (re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
    # key=value and "key": "value" pairs whose name says secret.
    (
        re.compile(
            r"(?i)((?:password|passwd|secret|api_key|apikey|token)['\"]?\s*[:=]\s*['\"]?)"
            r"[^'\"\s,;&}]+"
        ),
        r"\1" + REDACTED,
    ),
)


# Every pattern above needs one of these words; most log text has none of them, and looking
# for them is far cheaper than eight substitutions (there is a log line per delivery).
_TRIGGER = re.compile(r"(?i)kirim_|whsec_|bearer|basic|auth|://|passw|secret|api_?key|token")
_TRIGGER_WORDS = (
    "kirim_", "whsec_", "bearer", "basic", "auth", "://", "passw", "secret", "apikey",
    "api_key", "token",
)  # fmt: skip


def _may_hold_secret(text: str) -> bool:
    if text.isascii():
        lowered = text.lower()
        # A substring search per word beats one regex alternation by far: the regex tries
        # the words at almost every position, and this runs once per delivery line.
        return any(word in lowered for word in _TRIGGER_WORDS)
    # Unicode case-insensitive matching knows more equivalences than lower() (long s,
    # Kelvin sign, dotless i), so text that is not ASCII takes the regex.
    return _TRIGGER.search(text) is not None


def redact(text: str) -> str:
    """``text`` with every known secret shape replaced."""
    if not _may_hold_secret(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, int | float | bool) or arg is None:
        return arg
    try:
        shown = arg if isinstance(arg, str) else str(arg)
    except Exception:
        return arg
    cleaned = redact(shown)
    return arg if cleaned == shown else cleaned


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record's message, arguments and exception text in place."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    elif record.msg is not None and not isinstance(record.msg, int | float):
        record.msg = redact(str(record.msg))
    if isinstance(record.args, Mapping):
        record.args = {k: _redact_arg(v) for k, v in record.args.items()}
    elif isinstance(record.args, tuple):
        # Element by element, so formatters that read args positionally keep working.
        record.args = tuple(_redact_arg(a) for a in record.args)
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


# Attributes every record has; anything else was attached with ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


_PLAIN = (int, float, bool, type(None))  # a tuple: isinstance with a union is slower


def redact_fields(fields: dict[str, Any]) -> bool:
    """Redact the values of log-line fields (a record's ``extra=``) in place; True if any."""
    # One search over every string field (a delivery line has a dozen); only a line that
    # holds a trigger word is redacted field by field.
    texts: list[str] = []
    for value in fields.values():
        if type(value) is str:
            texts.append(value)
        elif not isinstance(value, _PLAIN):
            texts.append(repr(value))
    if not _may_hold_secret("\x00".join(texts)):
        return False
    changed = False
    for name, value in list(fields.items()):
        if isinstance(value, _PLAIN):
            continue
        if isinstance(value, str):
            cleaned = redact(value)
        else:
            shown = repr(value)
            cleaned = redact(shown)
            if cleaned == shown:
                continue
        if cleaned != value:
            fields[name] = cleaned
            changed = True
    return changed


class RedactExtras(logging.Filter):
    """Redacts ``extra=`` attributes, which are set after the record factory has run."""

    def filter(self, record: logging.LogRecord) -> bool:
        attrs = vars(record)
        extras = {name: value for name, value in attrs.items() if name not in _STANDARD}
        if redact_fields(extras):
            attrs.update(extras)
        return True


_installed = False


def install_redaction() -> None:
    """Redact every log record this process creates from now on (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    _installed = True


def setup(level: str = "INFO") -> None:
    install_redaction()
    # No format here prints the caller's file and line, thread or process name; finding
    # them is a large part of making a record, and there is a record per message sent.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        handlers=[GatheredStreamHandler()],
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactExtras) for f in handler.filters):
            handler.addFilter(RedactExtras())
    # Protocol-level debug logs could carry AUTH lines; keep them quiet.
    logging.getLogger("aiosmtplib").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)

"""Log output formats: one JSON object per line (production) or readable text (``kirim dev``).

``service.logs.setup`` installs the handler, levels and secret redaction; ``configure`` then
swaps the formatter on the root handlers. Delivery lines carry their facts as record
attributes (``extra=``), which both formatters print; recipient addresses are replaced by a
short SHA-256 unless ``KIRIM_LOG_RECIPIENTS=plain`` (an operator finds a complainant's lines
with ``kirim admin hash ADDRESS``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from service import logs
from service.settings import Settings

RecipientMode = Literal["hash", "plain"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "color_message", "taskName"}


def hash_address(address: str) -> str:
    """The form a recipient takes in hashed logs: stable, short, not reversible by eye."""
    digest = hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()
    return f"sha256:{digest[:16]}"


class _Fields:
    def __init__(self, recipients: RecipientMode) -> None:
        self.recipients = recipients

    def extras(self, record: logging.LogRecord) -> dict[str, Any]:
        out = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[0] != "_"}
        return self.shown(out)

    def shown(self, out: dict[str, Any]) -> dict[str, Any]:
        """``out`` (changed in place) as the line prints it: recipients hashed if so set."""
        if self.recipients == "hash":
            plain = out.get("recipient")
            if isinstance(plain, str):
                out["recipient"] = hash_address(plain)
                # An SMTP reply often quotes the address back: hide it there too.
                for key in ("reply", "error"):
                    if isinstance(out.get(key), str):
                        out[key] = out[key].replace(plain, out["recipient"])
            if isinstance(out.get("recipients"), list):
                out["recipients"] = [
                    hash_address(r) if isinstance(r, str) else r for r in out["recipients"]
                ]
        return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, the record's extras, exc."""

    def __init__(self, recipients: RecipientMode = "hash") -> None:
        super().__init__()
        self._fields = _Fields(recipients)

    def format(self, record: logging.LogRecord) -> str:
        doc = self._head(record.created, record.levelname, record.name, record.getMessage())
        doc.update(self._fields.extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = logs.redact(self.formatException(record.exc_info))
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return _dumps(doc)

    def line(
        self, created: float, level: str, logger: str, msg: str, fields: dict[str, Any]
    ) -> str:
        """What ``format`` gives for a record of these parts with ``fields`` as extras (no
        exception), for callers that log without making a record; ``fields`` is changed."""
        doc = self._head(created, level, logger, msg)
        doc.update(self._fields.shown(fields))
        return _dumps(doc)

    def lines(
        self, created: float, level: str, logger: str, msg: str, many: list[dict[str, Any]]
    ) -> list[str]:
        """``line`` for each of ``many``, all at the same moment."""
        head = self._head(created, level, logger, msg)
        out = []
        for fields in many:
            doc = head.copy()
            doc.update(self._fields.shown(fields))
            out.append(_dumps(doc))
        return out

    @staticmethod
    def _head(created: float, level: str, logger: str, msg: str) -> dict[str, Any]:
        return {
            "time": log_time(created),
            "level": level.lower(),
            "logger": logger,
            "msg": msg,
        }


class _SecondCache:
    """The date and time part of the last second formatted: a delivery writes a line per
    recipient, hundreds within the same second, and formatting a datetime costs more than
    the rest of a line's head."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""


_second_cache = _SecondCache()
# The rest of the time after the seconds, for each millisecond: a lookup, not a format.
_MILLIS = [f".{ms:03d}+00:00" for ms in range(1000)]


def log_time(created: float) -> str:
    """``datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")``."""
    if created < 0:
        return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    second = int(created)
    # Rounded to microseconds first, as ``fromtimestamp`` does (half to even).
    micros = round((created - second) * 1e6)
    if micros >= 1_000_000:
        second += 1
        micros -= 1_000_000
    cache = _second_cache
    if second != cache.second:
        cache.prefix = datetime.fromtimestamp(second, UTC).isoformat()[:19]
        cache.second = second
    return cache.prefix + _MILLIS[micros // 1000]


def _dumps(doc: dict[str, Any]) -> str:
    try:
        return orjson.dumps(doc, default=str).decode()
    except TypeError:  # keys that are not strings, integers too large for JSON
        return json.dumps(doc, default=str, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """The classic line, followed by the record's extras as key=value."""

    def __init__(self, recipients: RecipientMode = "hash") -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._fields = _Fields(recipients)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = self._fields.extras(record)
        if not extras:
            return line
        pairs = " ".join(f"{k}={_text(v)}" for k, v in extras.items())
        head, _, tail = line.partition("\n")
        return f"{head} {pairs}" + (f"\n{tail}" if tail else "")


def _text(value: Any) -> str:
    s = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return json.dumps(s, ensure_ascii=False) if (" " in s or not s) else s


def formatter_for(fmt: str, recipients: RecipientMode) -> logging.Formatter:
    return JsonFormatter(recipients) if fmt == "json" else TextFormatter(recipients)


def configure(settings: Settings) -> None:
    """Set up logging for an entry point: levels and redaction, then the chosen format."""
    logs.setup(settings.log_level)
    formatter = formatter_for(settings.log_format, settings.log_recipients)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)

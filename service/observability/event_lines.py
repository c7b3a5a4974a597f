"""Hot-path log lines (one per message accepted, recipient attempt, webhook attempt) without
a LogRecord.

``logger.info(msg, extra=fields)`` costs tens of microseconds: a LogRecord, its redaction,
the redaction filter's pass over every attribute, the formatter's pass again. That is a
tenth of the CPU a message costs. Where logging is set up as ``service.logs.setup`` and a
JSON ``configure`` leave it (one gathered JSON handler with redaction, no filter on the
logger), ``info`` writes the same line straight from the fields. Any other set-up (text
format, another handler, a test's log capture) gets an ordinary record.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from service import logs
from service.log_output import GatheredStreamHandler
from service.observability.logging import JsonFormatter

_INFO = logging.getLevelName(logging.INFO)


def info(logger: logging.Logger, msg: str, fields: dict[str, Any]) -> None:
    """``logger.info(msg, extra=fields)``, written directly when the set-up allows.

    ``fields`` is the caller's to give away: it may be changed (redacted, hashed).
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _standard_handler(logger)
    if handler is None:
        logger.info(msg, extra=fields)
        return
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter)
    logs.redact_fields(fields)
    handler.write_line(formatter.line(time.time(), _INFO, logger.name, logs.redact(msg), fields))


def info_many(logger: logging.Logger, msg: str, many: list[dict[str, Any]]) -> None:
    """``info`` for each of ``many``, as lines of one moment written together (a batch)."""
    if not many or not logger.isEnabledFor(logging.INFO):
        return
    handler = _standard_handler(logger)
    if handler is None:
        for fields in many:
            logger.info(msg, extra=fields)
        return
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter)
    for fields in many:
        logs.redact_fields(fields)
    shown = logs.redact(msg)
    handler.write_lines(formatter.lines(time.time(), _INFO, logger.name, shown, many))


def _standard_handler(logger: logging.Logger) -> GatheredStreamHandler | None:
    """The one handler a record of ``logger`` would reach, if it is the standard one."""
    if logger.filters:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if (
        type(found) is GatheredStreamHandler
        and found.level <= logging.INFO
        and type(found.formatter) is JsonFormatter
        and found.filters
        and all(type(f) is logs.RedactExtras for f in found.filters)
    ):
        return found
    return None

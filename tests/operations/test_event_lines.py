"""Hot-path log lines: the same line as a logged record, or an ordinary record when the
set-up is not the standard one."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from service.log_output import GatheredStreamHandler
from service.logs import RedactExtras, install_redaction
from service.observability import event_lines
from service.observability.logging import JsonFormatter, TextFormatter, hash_address

ADDRESS = "Bob@Example.com"


def _fields() -> dict[str, Any]:
    return {
        "event": "attempt",
        "message_id": "msg_1",
        "recipient": ADDRESS,
        "recipients": [ADDRESS, "carol@example.com"],
        "attempt": 2,
        "code": None,
        "possible_duplicate": False,
        "duration_ms": 4.2,
        # A reply quoting the address and (unlikely, but logged text is not ours) a secret.
        "reply": f"550 <{ADDRESS}> unknown; token=abc123secret",
        "tags": ["a", "b"],
    }


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    install_redaction()
    log = logging.getLogger("kirim.test.event_lines")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.filters.clear()


def _standard(log: logging.Logger, recipients: str = "hash") -> io.StringIO:
    out = io.StringIO()
    handler = GatheredStreamHandler(out)
    handler.setFormatter(JsonFormatter(recipients))  # type: ignore[arg-type]
    handler.addFilter(RedactExtras())
    log.handlers = [handler]  # only this one, whatever the test run attached
    return out


def _docs(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("recipients", ["hash", "plain"])
def test_direct_line_is_the_line_a_record_makes(logger: logging.Logger, recipients: str) -> None:
    out = _standard(logger, recipients)
    assert event_lines._standard_handler(logger) is not None
    event_lines.info(logger, "attempt sent", _fields())
    logger.info("attempt sent", extra=_fields())  # the ordinary path, for comparison
    direct, ordinary = _docs(out)
    assert direct.pop("time")[:4] == ordinary.pop("time")[:4]
    assert direct == ordinary
    assert list(direct) == list(ordinary)  # same key order too
    assert "abc123secret" not in json.dumps(direct)
    if recipients == "hash":
        assert direct["recipient"] == hash_address(ADDRESS)
        assert ADDRESS not in json.dumps(direct)
    else:
        assert direct["recipient"] == ADDRESS


@pytest.mark.parametrize("standard", [True, False])
def test_many_lines_are_the_lines_one_at_a_time_make(
    logger: logging.Logger, standard: bool
) -> None:
    out = _standard(logger)
    if not standard:
        logger.addFilter(logging.Filter())  # any filter: ordinary records

    def other() -> dict[str, Any]:
        return {**_fields(), "message_id": "msg_2", "recipient": "carol@example.com"}

    event_lines.info_many(logger, "attempt sent", [_fields(), other()])
    event_lines.info(logger, "attempt sent", _fields())
    event_lines.info(logger, "attempt sent", other())
    first, second, one, two = _docs(out)
    if standard:
        assert first["time"] == second["time"]  # one moment for the lines of one write
    for doc in (first, second, one, two):
        doc.pop("time")
    assert (first, second) == (one, two)


def test_secret_in_the_message_is_redacted(logger: logging.Logger) -> None:
    out = _standard(logger)
    event_lines.info(logger, "attempt password=hunter2", {"event": "attempt"})
    assert "hunter2" not in out.getvalue() and _docs(out)[0]["event"] == "attempt"


def test_disabled_level_writes_nothing(logger: logging.Logger) -> None:
    out = _standard(logger)
    logger.setLevel(logging.WARNING)
    event_lines.info(logger, "attempt sent", _fields())
    assert out.getvalue() == ""


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_any_other_set_up_gets_an_ordinary_record(logger: logging.Logger) -> None:
    out = _standard(logger)
    keep = _Keep()
    logger.addHandler(keep)  # a second handler, as a test's log capture adds
    assert event_lines._standard_handler(logger) is None
    event_lines.info(logger, "attempt sent", _fields())
    (record,) = keep.records
    assert record.getMessage() == "attempt sent" and vars(record)["message_id"] == "msg_1"
    assert _docs(out)[0]["message_id"] == "msg_1"  # the JSON handler still wrote its line


@pytest.mark.parametrize("change", ["text", "no-redaction", "logger-filter", "level"])
def test_set_ups_the_direct_line_does_not_take(logger: logging.Logger, change: str) -> None:
    _standard(logger)
    (handler,) = logger.handlers
    if change == "text":
        handler.setFormatter(TextFormatter())
    elif change == "no-redaction":
        handler.filters.clear()
    elif change == "logger-filter":
        logger.addFilter(lambda record: True)
    else:
        handler.setLevel(logging.WARNING)
    assert event_lines._standard_handler(logger) is None

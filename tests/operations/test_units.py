"""Pure parts: traceparent parsing, log formats, status classes, admin filters."""

from __future__ import annotations

import json
import logging

import pytest

from service.admin.actions import InvalidFilter, Selection
from service.admin.pauses import normalise
from service.observability.logging import JsonFormatter, TextFormatter, hash_address
from service.observability.metrics import status_class
from service.observability.tracing import parse

T = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "value, ok",
    [
        (f"00-{T}-00f067aa0ba902b7-01", True),
        (f"01-{T}-00f067aa0ba902b7-01-extra", True),  # future versions may add fields
        (f"00-{T}-00f067aa0ba902b7-01-extra", False),
        (f"00-{T.upper()}-00f067aa0ba902b7-01", False),
        (f"ff-{T}-00f067aa0ba902b7-01", False),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", False),
        (f"00-{T}-{'0' * 16}-01", False),
        (f"00-{T}-00f067aa0ba902b7", False),
        ("", False),
        (None, False),
    ],
)
def test_traceparent_validation(value: str | None, ok: bool) -> None:
    assert (parse(value) is not None) is ok


def test_child_keeps_trace_and_flags() -> None:
    ctx = parse(f"00-{T}-00f067aa0ba902b7-01")
    assert ctx is not None
    child = ctx.child()
    assert (child.trace_id, child.flags) == (T, "01") and child.span_id != ctx.span_id
    assert parse(child.header) == child


def _record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("kirim.delivery", logging.INFO, "f", 1, "attempt %s", ("sent",), None)
    rec.__dict__.update(extra)
    return rec


def test_json_formatter_hashes_recipients_everywhere() -> None:
    rec = _record(recipient="Bob@Example.com", reply="550 <Bob@Example.com> unknown", attempt=2)
    doc = json.loads(JsonFormatter("hash").format(rec))
    assert doc["msg"] == "attempt sent" and doc["level"] == "info" and doc["attempt"] == 2
    assert doc["recipient"] == hash_address("bob@example.com")
    assert "Bob@Example.com" not in json.dumps(doc)
    plain = json.loads(JsonFormatter("plain").format(_record(recipient="Bob@Example.com")))
    assert plain["recipient"] == "Bob@Example.com"


def test_text_formatter_appends_fields() -> None:
    line = TextFormatter("hash").format(_record(message_id="msg_1", recipients=["a@example.com"]))
    assert "attempt sent" in line and "message_id=msg_1" in line
    assert hash_address("a@example.com") in line and "a@example.com" not in line


def test_status_class() -> None:
    assert status_class("5.1.1", 550) == "5"
    assert status_class(None, 451) == "4"
    assert status_class(None, None) == "none"


def test_selection_checks() -> None:
    assert Selection().checked("retry").statuses == ("deferred",)
    assert set(Selection().checked("cancel").statuses) == {"scheduled", "queued", "deferred"}
    with pytest.raises(InvalidFilter):
        Selection(statuses=("sent",)).checked("bounce")
    with pytest.raises(ValueError):
        Selection(domain="%.com").checked("retry")
    assert normalise("domain", " @Example.COM ") == "example.com"

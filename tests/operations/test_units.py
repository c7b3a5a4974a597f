"""Pure parts: traceparent parsing, log formats, status classes, admin filters."""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime

import pytest

from service.admin.actions import InvalidFilter, Selection
from service.admin.pauses import normalise
from service.observability.logging import JsonFormatter, TextFormatter, hash_address, log_time
from service.observability.record import status_class
from service.observability.tracing import parse, trace_id_of

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
    ctx = parse(value)
    assert trace_id_of(value) == (ctx.trace_id if ctx else None)  # its shortcut agrees


@pytest.mark.parametrize(
    "value",
    [
        f"00-{T}-00f067aa0ba902b7-0g",
        f" 00-{T}-00f067aa0ba902b7-01",
        f"00-{T}-00f067aa0ba902b7-01\n",
    ],
)
def test_trace_id_of_agrees_with_parse_on_odd_headers(value: str) -> None:
    ctx = parse(value)
    assert trace_id_of(value) == (ctx.trace_id if ctx else None)


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


def test_log_time_is_the_iso_time_to_the_millisecond() -> None:
    """The per-second cache gives what formatting each time would, at second and rounding
    edges too (``fromtimestamp`` rounds to microseconds, half to even, before truncating)."""
    base = 1_795_900_000
    edges = [0.0, 0.0000005, 0.0005, 0.0009995, 0.5, 0.9994999, 0.9995, 0.9999994, 0.9999995]
    times = [base + k + f for k in range(3) for f in edges]
    rng = random.Random(8)
    times += [base + rng.uniform(-1e7, 1e7) for _ in range(20_000)]
    times += [-1.5, 0.0, 1e9 + 0.123456789]
    for t in times:
        assert log_time(t) == datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds"), t


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

"""W3C trace context: read ``traceparent`` on requests, keep it with each message, pass it on.

A request's trace context lives in a context variable for the length of the request, so the
accept path can stamp it on the message row without every route passing it along. Kirim
becomes a span of the caller's trace: the stored header keeps the caller's trace id and
flags with a fresh parent id, and each webhook request gets a fresh parent id again.
OpenTelemetry export is not built in (see Operations in README.md): the ids in logs and
headers let any collector join Kirim's lines to the caller's trace.
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from starlette.types import ASGIApp, Receive, Scope, Send

from service.db.engine import Database
from service.db.tables import messages

HEADER = "traceparent"
# version-traceid-parentid-flags, lower-case hex only (W3C Trace Context, section 3.2).
_PATTERN = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    span_id: str
    flags: str = "00"

    @property
    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> TraceContext:
        """The same trace with a new parent id: the next hop's view of our span."""
        return TraceContext(self.trace_id, new_span_id(), self.flags)


def new_span_id() -> str:
    return secrets.token_hex(8)


def new_trace() -> TraceContext:
    ids = secrets.token_hex(24)  # one read of the system's randomness for both ids
    return TraceContext(ids[:32], ids[32:], "00")


def parse(value: str | None) -> TraceContext | None:
    """A valid ``traceparent`` value, or None for anything malformed (which is ignored)."""
    if not value:
        return None
    m = _PATTERN.match(value.strip())
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if version == "00" and rest is not None:
        return None  # version 00 has exactly four fields
    return TraceContext(trace_id, span_id, flags)


# Version 00 as Kirim stores it: one match and a slice, for a log line per attempt.
_STORED = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def trace_id_of(header: str | None) -> str | None:
    """``parse(header).trace_id``, or None."""
    if header is not None and len(header) == 55:
        m = _STORED.fullmatch(header)
        if m is not None and m.group(1) != _ZERO_TRACE and m.group(2) != _ZERO_SPAN:
            return m.group(1)
    ctx = parse(header)
    return ctx.trace_id if ctx else None


_current: ContextVar[TraceContext | None] = ContextVar("kirim_trace", default=None)


def current() -> TraceContext | None:
    return _current.get()


class TraceContextMiddleware:
    """Sets the request's trace context: the caller's (as our child span) or a new trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = enter_request(scope.get("headers", ()))
        try:
            await self.app(scope, receive, send)
        finally:
            leave_request(token)


def enter_request(headers: Iterable[tuple[bytes, bytes]]) -> Token[TraceContext | None]:
    """Make a request with these headers the current trace context; ``leave_request`` ends it."""
    values = [v for k, v in headers if k == b"traceparent"]
    # Two traceparent headers are as good as none (the spec says to restart the trace).
    given = parse(values[0].decode("latin-1")) if len(values) == 1 else None
    return _current.set(given.child() if given else new_trace())


def leave_request(token: Token[TraceContext | None]) -> None:
    _current.reset(token)


def stamp(message_row: dict[str, Any]) -> None:
    """Record the current request's trace context on a message row about to be inserted."""
    ctx = _current.get()
    message_row.setdefault("traceparent", ctx.header if ctx else None)


class TraceCache:
    """Message id -> stored traceparent; small and per process, since the value never changes."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[str, str | None] = OrderedDict()

    def get(self, message_id: str) -> tuple[bool, str | None]:
        if message_id in self._items:
            self._items.move_to_end(message_id)
            return True, self._items[message_id]
        return False, None

    def put(self, message_id: str, value: str | None) -> None:
        self._items[message_id] = value
        self._items.move_to_end(message_id)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


_cache = TraceCache()


async def message_traceparent(db: Database, message_id: str | None) -> str | None:
    if not message_id:
        return None
    hit, value = _cache.get(message_id)
    if hit:
        return value
    async with db.read() as conn:
        value = (
            await conn.execute(select(messages.c.traceparent).where(messages.c.id == message_id))
        ).scalar()
    _cache.put(message_id, value)
    return value


def cached_traceparent(message_id: str | None) -> str | None:
    return _cache.get(message_id)[1] if message_id else None


async def webhook_headers(
    db: Database, headers: Mapping[str, str], event_data: Mapping[str, Any] | None
) -> dict[str, str]:
    """``headers`` plus a ``traceparent`` continuing the message's trace, when it has one."""
    out = dict(headers)
    message_id = event_data.get("message_id") if event_data else None
    try:
        stored = await message_traceparent(db, message_id if isinstance(message_id, str) else None)
    except Exception:  # tracing must never fail a delivery
        stored = None
    ctx = parse(stored)
    if ctx is not None:
        out[HEADER] = ctx.child().header
    return out

"""What the delivery path reports: one call per accept, settled attempt batch and webhook try.

Each call counts the metrics and writes one log line per item with the facts an operator
searches by (message id, recipient, tenant, attempt, trace id). The calls never raise: a
broken metric or log handler must not fail an accept or lose a settle.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from service.observability import event_lines, metrics
from service.observability.tracing import cached_traceparent, trace_id_of

if TYPE_CHECKING:
    from service.db.accepts import NewMessage
    from service.db.queue import Settlement
    from service.webhooks.delivery_queue import AttemptResult

accept_log = logging.getLogger("kirim.accept")
attempt_log = logging.getLogger("kirim.delivery")
webhook_log = logging.getLogger("kirim.webhook")
_internal = logging.getLogger(__name__)

_WEBHOOK_RESULT = {
    "succeeded": "succeeded",
    "pending": "retrying",
    "failed": "failed",
    "cancelled": "cancelled",
}


# Labelled children by metric and label values (a few dozen at most): ``labels()`` takes a
# lock and checks its arguments on every call, twice per recipient sent.
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def _child(metric: Any, *values: str) -> Any:
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def status_class(enhanced: str | None, code: int | None) -> str:
    """The ``status_class`` label of a delivery: the class digit of its enhanced or basic code."""
    if enhanced and enhanced[:1] in "245":
        return enhanced[:1]
    if code is not None and 200 <= code < 600:
        return str(code)[0]
    return "none"


def accepted(item: NewMessage) -> None:
    accepted_many([item])


def accepted_many(items: Sequence[NewMessage]) -> None:
    """Committed accepts (a batch request's together): counted, and a line each."""
    try:
        m = metrics.get()
        m.accepted_messages.inc(len(items))
        m.accepted_recipients.inc(sum(len(i.recipients) for i in items))
        if not accept_log.isEnabledFor(logging.INFO):
            return
        event_lines.info_many(accept_log, "accepted", [_accept_line(item) for item in items])
    except Exception:
        _internal.exception("could not record an accept")


def _accept_line(item: NewMessage) -> dict[str, Any]:
    msg = item.message
    return {
        "event": "accept",
        "message_id": msg.get("id"),
        "tenant": msg.get("tenant_id"),
        "recipients": [r.get("email") for r in item.recipients],
        "size": msg.get("size"),
        "trace_id": trace_id_of(msg.get("traceparent")),
    }


def settled(settlements: Sequence[Settlement]) -> None:
    """Settlements written together (of one settle transaction, after its commit)."""
    try:
        m = metrics.get()
        timed: set[tuple[float, float]] = set()
        lines: dict[str, list[dict[str, Any]]] = {}  # by status, which the message names
        counts: dict[tuple[str, str], int] = {}  # one increment per label set, not per row
        for s in settlements:
            key = (s.status, status_class(s.enhanced, s.code))
            counts[key] = counts.get(key, 0) + 1
            if s.attempted and (s.started_at, s.duration) not in timed:
                timed.add((s.started_at, s.duration))  # one observation per transaction
                _child(m.attempt_duration, s.outcome).observe(s.duration)
            lines.setdefault(s.status, []).append(
                {
                    "event": "attempt",
                    "message_id": s.message_id,
                    "recipient_id": s.recipient_id,
                    "recipient": s.email,
                    "tenant": s.tenant_id,
                    "attempt": s.attempt_number,
                    "status": s.status,
                    "reason": s.reason,
                    "stage": s.stage,
                    "code": s.code,
                    "enhanced": s.enhanced,
                    "reply": (s.reply or "")[:300],
                    "duration_ms": round(s.duration * 1000, 1),
                    "possible_duplicate": s.possible_duplicate,
                    "trace_id": trace_id_of(s.traceparent),
                }
            )
        for (status, code_class), n in counts.items():
            _child(m.deliveries, status, code_class).inc(n)
        # One moment for the lines of one settle: they were committed together.
        for status, group in lines.items():
            event_lines.info_many(attempt_log, f"attempt {status}", group)
    except Exception:
        _internal.exception("could not record a settlement")


def webhook_attempt(
    result: AttemptResult, event_type: str, event_data: Mapping[str, Any] | None
) -> None:
    try:
        m = metrics.get()
        shown = _WEBHOOK_RESULT.get(result.status, result.status)
        _child(m.webhook_deliveries, shown).inc()
        if result.attempted:
            m.webhook_duration.observe(result.latency)
        data = event_data or {}
        message_id = data.get("message_id") if isinstance(data.get("message_id"), str) else None
        event_lines.info(
            webhook_log,
            f"webhook {shown}",
            {
                "event": "webhook",
                "delivery_id": result.delivery_id,
                "endpoint_id": result.endpoint_id,
                "event_type": event_type,
                "message_id": message_id,
                "recipient": data.get("recipient"),
                "attempt": result.number,
                "status_code": result.status_code,
                "error": result.error,
                "latency_ms": round(result.latency * 1000, 1),
                "trace_id": trace_id_of(cached_traceparent(message_id)),
            },
        )
    except Exception:
        _internal.exception("could not record a webhook attempt")


def lease_reaps(count: int) -> None:
    if count:
        metrics.get().lease_reaps.inc(count)


def database_error(kind: str) -> None:
    metrics.get().database_errors.labels(kind).inc()


def pruned(kind: str, count: int) -> None:
    if count:
        metrics.get().retention_pruned.labels(kind).inc(count)

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
    from service.db.queue import MessageBody, Settlement
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


def accepted(item: NewMessage) -> None:
    try:
        m = metrics.get()
        m.accepted_messages.inc()
        m.accepted_recipients.inc(len(item.recipients))
        if not accept_log.isEnabledFor(logging.INFO):
            return
        msg = item.message
        event_lines.info(
            accept_log,
            "accepted",
            {
                "event": "accept",
                "message_id": msg.get("id"),
                "tenant": msg.get("tenant_id"),
                "recipients": [r.get("email") for r in item.recipients],
                "size": msg.get("size"),
                "trace_id": trace_id_of(msg.get("traceparent")),
            },
        )
    except Exception:
        _internal.exception("could not record an accept")


def settled(settlements: Sequence[Settlement], body: MessageBody | None) -> None:
    """Settlements of one message's attempt (or expiry), after they were handed to the DB."""
    try:
        m = metrics.get()
        trace_id = trace_id_of(getattr(body, "traceparent", None))
        timed: set[tuple[float, float]] = set()
        for s in settlements:
            _child(m.deliveries, s.status, metrics.status_class(s.enhanced, s.code)).inc()
            if s.attempted and (s.started_at, s.duration) not in timed:
                timed.add((s.started_at, s.duration))
                _child(m.attempt_duration, s.outcome).observe(s.duration)
            event_lines.info(
                attempt_log,
                f"attempt {s.status}",
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
                    "trace_id": trace_id,
                },
            )
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

"""The webhook event catalogue and the exact body each delivery sends.

Every recipient state change is an event. ``message.queued`` and ``message.scheduled``
(written when a message is accepted) go only to endpoints that list them explicitly: the
202 answer already told the caller, and delivering them by default would double the
webhook traffic of every send. An endpoint with an empty filter gets every other event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

EVENT_TYPES: dict[str, str] = {
    "message.queued": "A recipient was accepted and waits for delivery (opt-in).",
    "message.scheduled": "A recipient was accepted for a later send_at (opt-in).",
    "message.sent": "The receiving server accepted the message for a recipient (2xx).",
    "message.deferred": "An attempt failed temporarily (4xx, timeout, lost connection); "
    "it will be retried at data.next_attempt_at.",
    "message.bounced": "The receiving server refused a recipient permanently (5xx), or a "
    "bounce report came back later (reason late_bounce, data.bounce_category).",
    "message.delayed": "A delay notice (DSN, 4.x.x) came back for a recipient; its status "
    "is unchanged.",
    "message.complained": "The recipient reported the message as spam (ARF feedback report); "
    "the address is suppressed.",
    "message.failed": "A recipient could not be delivered before its lifetime or expires_at.",
    "message.suppressed": "A recipient was not sent to because the address is suppressed.",
    "message.cancelled": "A recipient was cancelled before it was sent.",
    "webhook.test": "Sent by POST /v1/webhooks/{id}/test to check an endpoint.",
}
# Delivered only when an endpoint lists them by name.
OPT_IN = frozenset({"message.queued", "message.scheduled"})
DEFAULT_TYPES = frozenset(EVENT_TYPES) - OPT_IN - {"webhook.test"}


def unknown_types(types: Iterable[str]) -> list[str]:
    return sorted({t for t in types if t not in EVENT_TYPES})


def wants(filter_types: Sequence[str], event_type: str) -> bool:
    """Whether an endpoint with this filter receives ``event_type``."""
    if filter_types:
        return event_type in filter_types
    return event_type in DEFAULT_TYPES


def webhook_id(event_id: int, endpoint_id: str) -> str:
    """The ``webhook-id`` of one event at one endpoint: stable across retries and replays."""
    return f"evt_{event_id}_{endpoint_id.partition('_')[2]}"


def timestamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(event_type: str, created_at: float, data: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": event_type, "timestamp": timestamp(created_at), "data": dict(data)}


def body_bytes(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that are signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()

"""Recipient states, the transitions between them, and how a message's status is summarised."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Status(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    DEFERRED = "deferred"
    SENT = "sent"
    BOUNCED = "bounced"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"


TERMINAL = frozenset(
    {Status.SENT, Status.BOUNCED, Status.FAILED, Status.SUPPRESSED, Status.CANCELLED}
)
# States a worker may claim from (when due).
CLAIMABLE = frozenset({Status.SCHEDULED, Status.QUEUED, Status.DEFERRED})

_ALLOWED: dict[Status, frozenset[Status]] = {
    Status.SCHEDULED: frozenset({Status.SENDING, Status.CANCELLED, Status.FAILED}),
    Status.QUEUED: frozenset({Status.SENDING, Status.CANCELLED, Status.FAILED, Status.SUPPRESSED}),
    Status.SENDING: frozenset(
        {Status.SENT, Status.DEFERRED, Status.BOUNCED, Status.FAILED, Status.SUPPRESSED}
    ),
    Status.DEFERRED: frozenset({Status.SENDING, Status.CANCELLED, Status.FAILED}),
}


def can_transition(src: Status, dst: Status) -> bool:
    return dst in _ALLOWED.get(src, frozenset())


def is_terminal(status: str) -> bool:
    return status in TERMINAL


# Message status rule (documented in the README): while any recipient is still in flight,
# the most advanced in-flight state wins (sending > deferred > queued > scheduled); once all
# are terminal, a shared terminal state is the message's, and a mix is "partially_sent" if
# any recipient was sent, else "failed".
_IN_FLIGHT_ORDER = (Status.SENDING, Status.DEFERRED, Status.QUEUED, Status.SCHEDULED)


def summarise(statuses: Iterable[str]) -> str:
    states = set(statuses)
    if not states:
        return Status.QUEUED.value
    for s in _IN_FLIGHT_ORDER:
        if s in states:
            return s.value
    if len(states) == 1:
        return next(iter(states))
    if Status.SENT in states:
        return "partially_sent"
    return Status.FAILED.value

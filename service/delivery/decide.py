"""What an attempt's outcome means for a recipient: a pure function of result, policy, clock."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from service.delivery.transport import Outcome, RecipientResult
from service.domain.retry import RetryPolicy
from service.domain.status import Status

_HINT = re.compile(
    r"(?:try|retry)\s+(?:again\s+)?(?:in|after)\s+(\d{1,6})\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?)\b",
    re.IGNORECASE,
)
_UNIT = {"s": 1, "m": 60, "h": 3600}


def retry_hint(text: str) -> float | None:
    """Seconds from a reply such as '451 4.7.1 Try again in 5 minutes', else None."""
    m = _HINT.search(text)
    if not m:
        return None
    return float(m.group(1)) * _UNIT[m.group(2)[0].lower()]


@dataclass(slots=True, init=False)
class Decision:
    status: Status
    next_attempt_at: float | None
    reason: str  # sent | smtp_permanent | smtp_temporary | possible_duplicate | expired
    event: str  # the event type emitted for this transition

    def __init__(
        self,
        status: Status,
        next_attempt_at: float | None,
        reason: str,
        event: str,
    ) -> None:
        self.status = status
        self.next_attempt_at = next_attempt_at
        self.reason = reason
        self.event = event


def decide(
    result: RecipientResult,
    *,
    attempts: int,
    now: float,
    deadline: float,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Decision:
    """Map one recipient's attempt result to its next state.

    ``attempts`` counts this attempt. Temporary failures (4xx, timeouts, lost connections,
    and the unknown outcome after the final dot) are retried until ``deadline``; a hint in
    the reply may stretch the delay, never shrink it below the policy's minimum.
    """
    if result.outcome is Outcome.ACCEPTED:
        return _SENT
    if result.outcome is Outcome.PERMANENT:
        return _BOUNCED
    if now >= deadline:
        return _EXPIRED
    delay = policy.delay(attempts, rng)
    hint = retry_hint(result.reply.text)
    if hint is not None:
        delay = max(policy.min_delay, min(hint, policy.max_delay))
    reason = "possible_duplicate" if result.outcome is Outcome.UNKNOWN else "smtp_temporary"
    return Decision(Status.DEFERRED, min(now + delay, deadline), reason, "message.deferred")


def expire(now: float) -> Decision:
    """The decision for a recipient whose deadline passed before it could be tried again."""
    return _EXPIRED


# The final decisions, made once (frozen): one per settled recipient otherwise.
_SENT = Decision(Status.SENT, None, "sent", "message.sent")
_BOUNCED = Decision(Status.BOUNCED, None, "smtp_permanent", "message.bounced")
_EXPIRED = Decision(Status.FAILED, None, "expired", "message.failed")

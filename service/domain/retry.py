"""Retry policy (pure): when to try a deferred recipient again, and when to give up."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Postfix-style exponential backoff clamped to [min_delay, max_delay] seconds.

    Postfix defaults: minimal_backoff_time 300 s, maximal_backoff_time 4000 s,
    maximal_queue_lifetime 5 days.
    """

    min_delay: float = 300.0
    max_delay: float = 4000.0
    lifetime: float = 5 * 24 * 3600.0
    jitter: float = 0.1  # ±10% so a burst of failures does not retry in lockstep

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Delay after the ``attempts``-th failed attempt (1-based)."""
        base = self.min_delay * (2 ** max(0, min(attempts - 1, 30)))
        base = min(self.max_delay, max(self.min_delay, base))
        if self.jitter and rng is not None:
            base *= 1 + rng.uniform(-self.jitter, self.jitter)
        return base

    def deadline(self, created_at: float, expires_at: float | None) -> float:
        """The moment after which a recipient is not tried again."""
        end = created_at + self.lifetime
        return min(end, expires_at) if expires_at is not None else end

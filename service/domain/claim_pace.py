"""How much a worker claims at once: about a quarter of a second of its own sending.

Larger claims cost less per message (one claim, one body read, fewer waits for the write
lock) and keep the sessions busy while a settle waits for the lock; but whatever a worker
holds, another tenant's new mail waits behind. So the claim follows the worker's recent
rate: at four thousand messages a second it holds about a thousand; against a slow server
the floor, the fixed size claims had before; never more than the batch size.
"""

from __future__ import annotations

HOLD_SECONDS = 0.25  # a claim holds about this much of the worker's sending
FLOOR = 256  # the fixed claim size before claims followed the rate
MIN_WINDOW = 0.05  # seconds of settling a rate is measured over


class ClaimPace:
    def __init__(self, batch_size: int) -> None:
        self._most = batch_size
        self._least = min(batch_size, FLOOR)
        self._settled = 0
        self._mark: tuple[float, int] | None = None  # (time, settled count) of the last sample
        self.rate = 0.0  # recipients settled per second, smoothed

    def settled(self, count: int) -> None:
        self._settled += count

    def target(self, now: float) -> int:
        """Recipients to hold after the next claim (``now``: a monotonic clock)."""
        if self._mark is None:
            self._mark = (now, self._settled)
        then, before = self._mark
        if now - then >= MIN_WINDOW:
            sample = (self._settled - before) / (now - then)
            self.rate = sample if self.rate == 0 else (self.rate + sample) / 2
            self._mark = (now, self._settled)
        return max(self._least, min(self._most, int(self.rate * HOLD_SECONDS)))

"""Identifiers: a type prefix and a ULID (time-ordered, 128 bits, Crockford base32).

Time order lets lists paginate by id; the 80 random bits make ids unguessable.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# Two characters per lookup: 10 bits per step.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]

# Random bytes are read from the system a few thousand at a time: one read per id cost a
# third of the id. A forked child starts with none, so it never repeats its parent's.
_POOL_BYTES = 4000
_pool = b""
_used = 0
# The time part changes once a millisecond; ids made within one share its text.
_last_ms = -1
_last_time = ""


def _random_halves() -> tuple[int, int]:
    """80 fresh random bits as two 40-bit halves: each fits a machine word, where one
    80-bit integer would take arbitrary-precision arithmetic at every step."""
    global _pool, _used
    if _used + 10 > len(_pool):
        _pool, _used = os.urandom(_POOL_BYTES), 0
    start = _used
    _used = start + 10
    pool = _pool
    return (
        int.from_bytes(pool[start : start + 5], "big"),
        int.from_bytes(pool[start + 5 : start + 10], "big"),
    )


def _forget_pool() -> None:
    global _pool, _used
    _pool, _used = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def ulid(now: float | None = None, random80: int | None = None) -> str:
    """A ULID for ``now`` (default: the clock) with ``random80`` (default: fresh) as its
    random part: the 48-bit millisecond time, then the 80 random bits, 5 bits a letter."""
    global _last_ms, _last_time
    ms = int((time.time() if now is None else now) * 1000)
    pairs = _PAIRS
    if ms != _last_ms:
        _last_time = "".join([pairs[(ms >> shift) & 1023] for shift in range(40, -1, -10)])
        _last_ms = ms
    if random80 is None:
        high, low = _random_halves()
    else:
        high, low = random80 >> 40, random80 & 0xFF_FFFF_FFFF
    return "".join(
        [
            _last_time,
            pairs[high >> 30],
            pairs[(high >> 20) & 1023],
            pairs[(high >> 10) & 1023],
            pairs[high & 1023],
            pairs[low >> 30],
            pairs[(low >> 20) & 1023],
            pairs[(low >> 10) & 1023],
            pairs[low & 1023],
        ]
    )


def new_id(prefix: str, now: float | None = None) -> str:
    return f"{prefix}_{ulid(now)}"


def is_id(value: str, prefix: str) -> bool:
    head, _, body = value.partition("_")
    return head == prefix and len(body) == 26 and all(c in _ALPHABET for c in body)

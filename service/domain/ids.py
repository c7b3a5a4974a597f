"""Identifiers: a type prefix and a ULID (time-ordered, 128 bits, Crockford base32).

Time order lets lists paginate by id; the 80 random bits make ids unguessable.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# Two characters per lookup: 13 steps of 10 bits instead of 26 of 5.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def ulid(now: float | None = None) -> str:
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in range(120, -1, -10)])


def new_id(prefix: str, now: float | None = None) -> str:
    return f"{prefix}_{ulid(now)}"


def is_id(value: str, prefix: str) -> bool:
    head, _, body = value.partition("_")
    return head == prefix and len(body) == 26 and all(c in _ALPHABET for c in body)

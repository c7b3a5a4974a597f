"""How a worker loads a claim's message bodies without holding more than its budget.

A claim takes up to a batch of recipients at once, and every body waits in memory until
its message is sent: a thousand messages of a few kilobytes are a few megabytes, but a
thousand of ten megabytes would not fit. So the bodies come in parts that fit the budget,
a part's messages are sent together, and the next part is loaded when they are done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def parts_within(ids: Sequence[str], sizes: Mapping[str, int], budget: int) -> list[list[str]]:
    """``ids`` in order, cut into consecutive parts whose sizes together fit ``budget``;
    a message larger than the budget on its own is a part by itself (it is sent anyway).
    An id missing from ``sizes`` (its body is gone) counts as empty."""
    parts: list[list[str]] = []
    part: list[str] = []
    used = 0
    for message_id in ids:
        size = sizes.get(message_id, 0)
        if part and used + size > budget:
            parts.append(part)
            part, used = [], 0
        part.append(message_id)
        used += size
    if part:
        parts.append(part)
    return parts

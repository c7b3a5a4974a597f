"""How one claim shares its capacity: strict priority, then even shares between tenants.

Pure: no I/O. The claim asks a ``FairClaim`` for the next round's quotas, takes up to that
many due rows per tenant, and reports what each tenant actually had. A tenant that had
fewer rows than its quota is done for this claim; what it left goes, in another round, to
the tenants of the same priority that filled theirs, and only then to the next priority.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Rotation:
    """Per priority, the last tenant that got one of an uneven split's spare rows.

    Kept by a worker between claims so that, when capacity does not divide evenly (or is
    smaller than the number of tenants), the spare rows go round the tenants in turn.
    """

    after: dict[int, str] = field(default_factory=dict)


def split(
    capacity: int, tenants: Iterable[str], after: str | None
) -> tuple[dict[str, int], str | None]:
    """Divide ``capacity`` evenly between ``tenants``; spare rows go one each, in tenant id
    order, to the tenants after ``after`` (wrapping round).

    Returns the non-zero quotas and the tenant to continue after next time.
    """
    ordered = sorted(set(tenants))
    if not ordered or capacity <= 0:
        return {}, after
    base, spare = divmod(capacity, len(ordered))
    quotas = dict.fromkeys(ordered, base)
    # By id, not by position: the next claim may see a different set of tenants.
    start = 0 if after is None else bisect_right(ordered, after)
    last = after
    for i in range(spare):
        last = ordered[(start + i) % len(ordered)]
        quotas[last] += 1
    return {t: q for t, q in quotas.items() if q > 0}, last


class FairClaim:
    """The rounds of one claim over the due (priority, tenant) pairs, best priority first."""

    def __init__(
        self, capacity: int, due: Iterable[tuple[int, str]], rotation: Rotation | None = None
    ) -> None:
        self.remaining = max(0, capacity)
        self.rotation = rotation if rotation is not None else Rotation()
        self._levels: dict[int, set[str]] = defaultdict(set)
        for priority, tenant in due:
            self._levels[priority].add(tenant)
        self._asked: tuple[int, dict[str, int]] | None = None

    def next_round(self) -> tuple[int, dict[str, int]] | None:
        """The priority and per-tenant quotas to take next; None when the claim is done."""
        if self._asked is not None:
            raise RuntimeError("record() the previous round first")
        while self.remaining > 0 and self._levels:
            priority = min(self._levels)
            tenants = self._levels[priority]
            if not tenants:
                del self._levels[priority]
                continue
            quotas, last = split(self.remaining, tenants, self.rotation.after.get(priority))
            if last is not None:
                self.rotation.after[priority] = last
            self._asked = (priority, quotas)
            return priority, quotas
        return None

    def record(self, got: Mapping[str, int]) -> None:
        """How many rows each tenant of the last round yielded."""
        if self._asked is None:
            raise RuntimeError("no round to record")
        priority, quotas = self._asked
        self._asked = None
        for tenant, quota in quotas.items():
            n = min(got.get(tenant, 0), quota)
            self.remaining -= n
            if n < quota:
                # It has no more due rows (or, on PostgreSQL, another worker holds them).
                self._levels[priority].discard(tenant)


def interleave(items: Sequence[T], key: Callable[[T], Hashable]) -> list[T]:
    """``items`` taken one from each ``key`` group in turn, groups in first-seen order."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    ranked = [
        (rank, g, item)
        for g, group in enumerate(groups.values())
        for rank, item in enumerate(group)
    ]
    ranked.sort(key=lambda x: (x[0], x[1]))
    return [item for _, _, item in ranked]

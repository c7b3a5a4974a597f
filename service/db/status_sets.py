"""Sets of statuses as partial-index conditions, and the query terms that use those indexes.

SQLite evaluates ``status IN ('a', 'b', 'c')`` (three or more constants) by building a
temporary B-tree of the values. As a partial index's condition that happens on every row
written: four times per settled recipient (the old and the new row, for two indexes),
about 6 µs of a settle's 9 per row. The same set written as equalities joined by OR costs
a few comparisons. A query uses a partial index only when its WHERE repeats the index's
condition with literals, so both are spelled here, from one tuple.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import literal, or_

CLAIMABLE = ("scheduled", "queued", "deferred")  # recipients a worker may claim
HOOK_FINISHED = ("succeeded", "failed", "cancelled")  # webhook deliveries retention may prune


def condition(values: Sequence[str]) -> str:
    """The partial-index condition: ``status = 'a' OR status = 'b' OR ...``."""
    return " OR ".join(f"status = '{value}'" for value in values)


def one_of(column: Any, values: Sequence[str]) -> Any:
    """SQL: ``column`` holds one of ``values``, in the form ``condition`` gives the index."""
    return or_(*(column == literal(value, literal_execute=True) for value in values))

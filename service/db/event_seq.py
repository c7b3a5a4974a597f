"""Per-message event sequence numbers: 1, 2, 3 … in the order a message's events commit.

The last number given is the larger of two values: the highest ``seq`` among the message's
events (one seek in ``ix_events_message_seq``) and ``messages.event_seq``, a floor. The
accept writes the floor with the message's first events; retention raises it before it
deletes events, so a late event (a bounce report weeks later) still continues the count.
Writers that add events therefore only read: no messages row is rewritten per settle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, update

from service.db.plain_statement import PlainStatement
from service.db.tables import events, messages


def _newest() -> Any:
    """SQL: the highest ``seq`` among the events of the message row at hand."""
    return (
        select(func.max(events.c.seq)).where(events.c.message_id == messages.c.id).scalar_subquery()
    )


def _last_seqs(is_sqlite: bool) -> PlainStatement:
    query = select(messages.c.id, messages.c.event_seq, _newest()).where(
        messages.c.id.in_(bindparam("b_ids", expanding=True))
    )
    if not is_sqlite:
        # Row locks serialise the numbering between processes writing events of one
        # message; SQLite's single writer already does. Ordered, so two settles lock their
        # shared messages in the same order.
        query = query.order_by(messages.c.id).with_for_update(of=messages)
    return PlainStatement(query)


_LAST_SEQS = {True: _last_seqs(True), False: _last_seqs(False)}


async def last_seqs(conn: Any, is_sqlite: bool, message_ids: Sequence[str]) -> dict[str, int]:
    """The last sequence number given to each of ``message_ids`` (0: none yet), inside the
    write transaction that is about to add events to them."""
    if not message_ids:
        return {}
    rows = await _LAST_SEQS[is_sqlite].rows(conn, {"b_ids": list(message_ids)})
    return {mid: max(floor or 0, newest or 0) for mid, floor, newest in rows}


def raise_floors(event_ids: Sequence[int]) -> Any:
    """SQL: keep on each message the last number among its events, before ``event_ids``
    are deleted (run in the same transaction as the delete)."""
    newest = _newest()
    doomed = select(events.c.message_id).where(events.c.id.in_(list(event_ids)))
    return (
        update(messages)
        .where(messages.c.id.in_(doomed), messages.c.event_seq < newest)
        .values(event_seq=newest)
    )

"""Cancelling a message: every recipient still waiting ends ``cancelled``, with an event.

Recipients being sent (``sending``: leased to a worker inside an SMTP transaction) cannot be
recalled; they keep their state and the caller learns which ones they were.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from service.db.engine import Database
from service.db.queue import Settlement, _write_events
from service.db.tables import messages, recipients
from service.domain.status import CLAIMABLE, Status

_WAITING = [s.value for s in CLAIMABLE]


@dataclass(frozen=True, slots=True)
class CancelResult:
    cancelled: list[tuple[str, str]]  # (recipient id, email)
    in_flight: list[tuple[str, str]]  # being sent now; not cancelled
    unchanged: list[tuple[str, str, str]]  # already terminal: (id, email, status)


async def cancel_message(
    db: Database, *, tenant_id: str, message_id: str, now: float
) -> CancelResult | None:
    """None when the tenant has no such message."""
    async with db.write() as conn:
        head = select(messages.c.tags, messages.c.metadata).where(
            messages.c.id == message_id, messages.c.tenant_id == tenant_id
        )
        found = (await conn.execute(head)).first()
        if found is None:
            return None
        tags, meta = found
        # The status condition is re-checked row by row, so a recipient a worker claimed a
        # moment ago stays with that worker.
        res = await conn.execute(
            update(recipients)
            .where(recipients.c.message_id == message_id, recipients.c.status.in_(_WAITING))
            .values(
                status=Status.CANCELLED.value,
                reason="cancelled",
                next_attempt_at=now,
                updated_at=now,
            )
            .returning(recipients.c.id, recipients.c.email, recipients.c.attempts)
        )
        done = sorted(res.all())
        rest = (
            await conn.execute(
                select(recipients.c.id, recipients.c.email, recipients.c.status).where(
                    recipients.c.message_id == message_id,
                    recipients.c.status != Status.CANCELLED.value,
                )
            )
        ).all()
        if done:
            await _write_events(
                conn,
                db,
                [
                    Settlement(
                        recipient_id=rid,
                        token="",
                        message_id=message_id,
                        tenant_id=tenant_id,
                        email=email,
                        status=Status.CANCELLED.value,
                        attempt_number=attempts,
                        next_attempt_at=None,
                        reason="cancelled",
                        event_type="message.cancelled",
                        outcome="cancelled",
                        stage="",
                        code=None,
                        enhanced=None,
                        reply="",
                        started_at=now,
                        duration=0.0,
                        possible_duplicate=False,
                        tags=list(tags or []),
                        metadata=dict(meta or {}),
                        attempted=False,
                    )
                    for rid, email, attempts in done
                ],
                now,
            )
    return CancelResult(
        cancelled=[(r[0], r[1]) for r in done],
        in_flight=[(r[0], r[1]) for r in rest if r[2] == Status.SENDING.value],
        unchanged=[(r[0], r[1], r[2]) for r in rest if r[2] != Status.SENDING.value],
    )

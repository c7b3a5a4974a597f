"""A delivered recipient's settlement, as the worker would hand it to ``queue.settle``."""

from __future__ import annotations

from service.db import queue


def sent(
    recipient_id: str,
    *,
    message_id: str,
    tenant_id: str,
    email: str,
    token: str,
    attempt_number: int = 1,
    started_at: float = 0.0,
) -> queue.Settlement:
    return queue.Settlement(
        recipient_id=recipient_id,
        token=token,
        message_id=message_id,
        tenant_id=tenant_id,
        email=email,
        status="sent",
        attempt_number=attempt_number,
        next_attempt_at=None,
        reason="sent",
        event_type="message.sent",
        outcome="accepted",
        stage="dot",
        code=250,
        enhanced="2.0.0",
        reply="250 ok",
        started_at=started_at,
        duration=0.1,
        possible_duplicate=False,
    )

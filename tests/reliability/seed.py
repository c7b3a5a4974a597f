"""Accepting many messages fast, through the service's own accept code (no HTTP)."""

from __future__ import annotations

import asyncio
import time

from service.db.accepts import insert_messages
from service.db.engine import Database
from service.domain import envelope
from service.domain.retry import RetryPolicy
from service.submission import prepare


async def _seed(database_url: str, emails: list[str], per_commit: int) -> list[str]:
    db = Database(database_url)
    ids: list[str] = []
    try:
        for start in range(0, len(emails), per_commit):
            items = []
            for email in emails[start : start + per_commit]:
                draft = envelope.compose(
                    sender="app@example.com", to=[email], subject=email, text="hello"
                )
                rows, accepted = prepare(
                    draft,
                    tenant_id="default",
                    now=time.time(),
                    policy=RetryPolicy(),
                    message_id_domain="kirim.test",
                )
                items.append(rows)
                ids.append(accepted.id)
            await insert_messages(db, items)
    finally:
        await db.dispose()
    return ids


def seed(database_url: str, emails: list[str], per_commit: int = 200) -> list[str]:
    """One single-recipient message per address; returns the message ids."""
    return asyncio.run(_seed(database_url, emails, per_commit))

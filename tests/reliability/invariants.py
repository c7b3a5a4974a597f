"""The "nothing lost" oracle (test plan I1-I3), read straight from the database.

I1  every accepted message has at least one recipient, and every recipient is terminal,
    waiting with a next attempt time, or leased with a lease that has not expired;
I2  each recipient reached the SMTP server at most once, unless the test allows a flagged
    duplicate: then every copy carries the message's own Message-ID and the row is flagged;
I3  each recipient marked ``sent`` reached the server at least once.

Also checked: a terminal recipient has exactly one terminal event.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from service.db.engine import Database
from service.db.tables import attempts, events, messages, recipients
from tests.support.smtp_script import Delivery

TERMINAL = {"sent", "bounced", "failed", "suppressed", "cancelled"}
WAITING = {"scheduled", "queued", "deferred"}
_TERMINAL_EVENTS = {"message.sent", "message.bounced", "message.failed"}


@dataclass
class Snapshot:
    messages: dict[str, dict[str, Any]]
    recipients: list[dict[str, Any]]
    attempts: list[dict[str, Any]]
    events: list[dict[str, Any]]

    def recipient(self, email: str) -> dict[str, Any]:
        (row,) = [r for r in self.recipients if r["email"] == email]
        return row

    def attempts_of(self, email: str) -> list[dict[str, Any]]:
        rid = self.recipient(email)["id"]
        return sorted((a for a in self.attempts if a["recipient_id"] == rid), key=_number)

    def events_of(self, email: str) -> list[str]:
        rid = self.recipient(email)["id"]
        return [e["type"] for e in sorted(self.events, key=_seq) if e["recipient_id"] == rid]

    def statuses(self) -> Counter[str]:
        return Counter(r["status"] for r in self.recipients)


def _number(row: dict[str, Any]) -> int:
    return int(row["number"])


def _seq(row: dict[str, Any]) -> int:
    return int(row["seq"])


async def snapshot_async(database_url: str) -> Snapshot:
    db = Database(database_url)
    try:
        async with db.read() as conn:
            msgs = (
                await conn.execute(select(messages.c.id, messages.c.message_id_header))
            ).mappings()
            by_id = {m["id"]: dict(m) for m in msgs}
            rcpts = [dict(r) for r in (await conn.execute(select(recipients))).mappings()]
            atts = [dict(r) for r in (await conn.execute(select(attempts))).mappings()]
            evs = [
                dict(r)
                for r in (
                    await conn.execute(
                        select(
                            events.c.message_id, events.c.recipient_id, events.c.seq, events.c.type
                        )
                    )
                ).mappings()
            ]
    finally:
        await db.dispose()
    return Snapshot(by_id, rcpts, atts, evs)


def snapshot(database_url: str) -> Snapshot:
    return asyncio.run(snapshot_async(database_url))


def received_counts(received: Iterable[Delivery]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for d in received:
        counts.update(d.recipients)
    return counts


def check(
    snap: Snapshot,
    received: Iterable[Delivery],
    *,
    allow_duplicates: Collection[str] = (),
    all_terminal: bool = True,
    now: float | None = None,
) -> None:
    """Assert I1-I3 over everything in ``snap``; raise AssertionError naming the breach."""
    now = time.time() if now is None else now
    received = list(received)
    emails = [r["email"] for r in snap.recipients]
    assert len(emails) == len(set(emails)), "tests must use one address per recipient row"

    # I1
    with_rcpts = {r["message_id"] for r in snap.recipients}
    assert set(snap.messages) <= with_rcpts, "a message has no recipient rows"
    for r in snap.recipients:
        status = r["status"]
        if all_terminal:
            assert status in TERMINAL, f"I1: {r['email']} ended {status}"
        elif status in WAITING:
            assert r["next_attempt_at"] is not None, f"I1: {r['email']} waits for nothing"
        elif status == "sending":
            lease = r["lease_expires_at"]
            assert lease is not None and lease > now, f"I1: {r['email']} stuck sending"
        else:
            assert status in TERMINAL, f"I1: {r['email']} in unknown state {status}"
        if status in TERMINAL:
            terminal = [e for e in snap.events_of(r["email"]) if e in _TERMINAL_EVENTS]
            assert len(terminal) == 1, f"{r['email']}: terminal events {terminal}"

    # I2
    counts = received_counts(received)
    by_email = {r["email"]: r for r in snap.recipients}
    for email, n in counts.items():
        if email not in by_email or n <= 1:
            continue
        assert email in allow_duplicates, f"I2: {email} received {n} times"
        row = by_email[email]
        assert row["possible_duplicate"], f"I2: {email} duplicated but not flagged"
        header = snap.messages[row["message_id"]]["message_id_header"]
        ids = {d.message_id for d in received if email in d.recipients}
        assert ids == {header}, f"I2: {email} copies carry Message-IDs {ids}, not {header}"

    # I3
    for r in snap.recipients:
        if r["status"] == "sent":
            assert counts[r["email"]] >= 1, f"I3: {r['email']} is sent but never arrived"


def check_db(database_url: str, received: Iterable[Delivery], **kw: Any) -> Snapshot:
    snap = snapshot(database_url)
    check(snap, received, **kw)
    return snap

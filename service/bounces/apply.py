"""Apply matched bounce and complaint reports to the database, once each.

Everything one report changes commits in ONE write transaction: the ``bounce_reports``
row that makes it idempotent (keyed by the report's own Message-ID), the recipients'
status, the events with their webhook deliveries, and the suppressions. A report seen
again after a crash between that commit and the mailbox delete changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from service.bounces.classify import BounceCategory, classify
from service.bounces.parse import BounceReport, RecipientReport, ReportKind
from service.bounces.pipeline import Match
from service.db.engine import Database
from service.db.event_seq import last_seqs
from service.db.suppressions import HARD_BOUNCE_CODES
from service.db.tables import bounce_reports, messages, recipients, suppressions
from service.domain.status import Status
from service.webhooks.outbox import record_events

log = logging.getLogger(__name__)

LATE_BOUNCE = "late_bounce"
# A bounce report may come for any delivered or still-pending recipient; rows already
# refused, expired, suppressed or cancelled keep their state.
_BOUNCEABLE = frozenset(
    s.value for s in (Status.SENT, Status.DEFERRED, Status.QUEUED, Status.SCHEDULED, Status.SENDING)
)
# Categories that may clear up: suppressing on them loses good addresses (the same rule
# as the settle path's HARD_BOUNCE_CODES).
_NOT_SUPPRESSED = frozenset(
    {
        BounceCategory.MAILBOX_FULL,
        BounceCategory.POLICY_BLOCK,
        BounceCategory.SPAM_BLOCK,
        BounceCategory.MESSAGE_TOO_LARGE,
        BounceCategory.TRANSIENT,
    }
)
_BASIC_CODE = re.compile(r"(?<!\d)([245]\d\d)(?!\d)")


@dataclass(frozen=True)
class Applied:
    """What one ``apply`` call did (``duplicate``: the report was applied before)."""

    duplicate: bool
    events: tuple[str, ...] = ()
    suppressed: tuple[str, ...] = ()


def report_key(report: BounceReport) -> str:
    """The idempotence key: the report's Message-ID, else a digest of what it says."""
    if report.report_message_id:
        return report.report_message_id[:255]
    parts = [report.kind.value, report.original_message_id or "", report.subject or ""]
    parts += [f"{r.address}|{r.action}|{r.status}|{r.diagnostic}" for r in report.recipients]
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def is_permanent(entry: RecipientReport) -> bool:
    if entry.action == "failed":
        return not (entry.status or "").startswith("4")
    return (entry.status or "").startswith("5")


def _entry_for(report: BounceReport, email: str) -> RecipientReport | None:
    """The report's entry about ``email``; a single entry is taken as-is (forwarded or
    rewritten addresses are common and the token already named the recipient)."""
    wanted = email.lower()
    for r in report.recipients:
        if r.address.lower() == wanted or (r.original_address or "").lower() == wanted:
            return r
    actionable = [r for r in report.recipients if r.action in ("failed", "delayed", "complaint")]
    return actionable[0] if len(actionable) == 1 else None


def _event_type(report: BounceReport, entry: RecipientReport | None) -> str | None:
    if report.kind is ReportKind.COMPLAINT:
        return "message.complained"
    if entry is None:
        return None
    if entry.action == "delayed" or report.kind is ReportKind.DELAY:
        return "message.delayed"
    if is_permanent(entry):
        return "message.bounced"
    return None


def _category(entry: RecipientReport | None, report: BounceReport) -> BounceCategory:
    if report.kind is ReportKind.COMPLAINT:
        return BounceCategory.COMPLAINT
    if entry is None:
        return BounceCategory.OTHER
    return entry.category or classify(entry.status, entry.diagnostic)


def _basic_code(diagnostic: str | None) -> int | None:
    found = _BASIC_CODE.search(diagnostic or "")
    return int(found.group(1)) if found else None


def _insert_ignore(is_sqlite: bool, table: Any, rows: list[dict[str, Any]], key: list[str]) -> Any:
    dialect_insert = sqlite.insert if is_sqlite else postgresql.insert
    return dialect_insert(table).values(rows).on_conflict_do_nothing(index_elements=key)


class BounceStore:
    """``apply`` and ``lookup`` for ``BounceProcessor`` and the inbound receiver."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def lookup(self, original_message_id: str, addresses: Sequence[str]) -> list[Match]:
        """Recipients of the message with this Message-ID header that the report names.

        A message with one recipient matches even when the report's address differs
        (forwarding); with several, only the addresses named count.
        """
        stmt = (
            select(recipients.c.id, recipients.c.message_id, recipients.c.email)
            .join(messages, messages.c.id == recipients.c.message_id)
            .where(messages.c.message_id_header == original_message_id.strip())
            .order_by(recipients.c.id)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        wanted = {a.lower() for a in addresses}
        named = [r for r in rows if r[2].lower() in wanted]
        chosen = named or (rows if len(rows) == 1 else [])
        return [Match(r[1], r[0], "message_id") for r in chosen]

    async def apply(self, report: BounceReport, matches: Sequence[Match]) -> None:
        await self.apply_report(report, matches)

    async def apply_report(self, report: BounceReport, matches: Sequence[Match]) -> Applied:
        now = self.clock()
        key = report_key(report)
        ids = sorted({m.recipient_id for m in matches})
        async with self.db.write() as conn:
            claimed = await conn.execute(
                _insert_ignore(
                    self.db.is_sqlite,
                    bounce_reports,
                    [
                        {
                            "report_message_id": key,
                            "tenant_id": None,
                            "kind": report.kind.value,
                            "received_at": now,
                            "recipient_ids": ids,
                            "raw_size": report.size,
                        }
                    ],
                    ["report_message_id"],
                )
            )
            if claimed.rowcount == 0:
                log.info("bounce report %s was already applied", key)
                return Applied(duplicate=True)
            q = select(recipients).where(recipients.c.id.in_(ids)).order_by(recipients.c.id)
            if not self.db.is_sqlite:
                q = q.with_for_update()
            rows = [dict(r) for r in (await conn.execute(q)).mappings().all()]
            # Tokens name message and recipient together; a mismatch is not ours to touch.
            pairs = {(m.message_id, m.recipient_id) for m in matches}
            rows = [r for r in rows if (r["message_id"], r["id"]) in pairs]
            found = [self._change(report, r) for r in rows]
            changes = [c for c in found if c is not None]
            if changes:
                await self._write(conn, report, changes, now)
            tenants = sorted({r["tenant_id"] for r in rows})
            await conn.execute(
                update(bounce_reports)
                .where(bounce_reports.c.report_message_id == key)
                .values(tenant_id=tenants[0] if tenants else None)
            )
        return Applied(
            duplicate=False,
            events=tuple(c.event_type for c in changes),
            suppressed=tuple(c.row["email"] for c in changes if c.suppress),
        )

    def _change(self, report: BounceReport, row: dict[str, Any]) -> _Change | None:
        entry = _entry_for(report, row["email"])
        event_type = _event_type(report, entry)
        if event_type is None:
            return None
        category = _category(entry, report)
        bounce = event_type == "message.bounced" and row["status"] in _BOUNCEABLE
        suppress = event_type == "message.complained" or (
            event_type == "message.bounced"
            and (
                category not in _NOT_SUPPRESSED
                or (entry is not None and entry.status in HARD_BOUNCE_CODES)
            )
        )
        return _Change(row, entry, event_type, category, bounce, suppress)

    async def _write(
        self, conn: Any, report: BounceReport, changes: list[_Change], now: float
    ) -> None:
        message_ids = sorted({c.row["message_id"] for c in changes})
        # Locks the messages (PostgreSQL), serialising the numbering with settling workers.
        seqs = await last_seqs(conn, self.db.is_sqlite, message_ids)
        mq = select(messages.c.id, messages.c.tags, messages.c.metadata)
        mq = mq.where(messages.c.id.in_(message_ids))
        info = {r[0]: (r[1], r[2]) for r in (await conn.execute(mq)).all()}
        rows: list[dict[str, Any]] = []
        for c in changes:
            entry, row = c.entry, c.row
            mid = row["message_id"]
            if c.bounce:
                await conn.execute(
                    update(recipients)
                    .where(recipients.c.id == row["id"])
                    .values(
                        status=Status.BOUNCED.value,
                        reason=LATE_BOUNCE,
                        bounce_category=c.category.value,
                        last_code=_basic_code(entry.diagnostic if entry else None),
                        last_enhanced=entry.status if entry else None,
                        last_reply=(entry.diagnostic or "")[:2000] if entry else "",
                        last_stage="report",
                        lease_owner=None,
                        lease_token=None,
                        lease_expires_at=None,
                        updated_at=now,
                    )
                )
            seqs[mid] += 1
            rows.append(
                {
                    "tenant_id": row["tenant_id"],
                    "message_id": mid,
                    "recipient_id": row["id"],
                    "seq": seqs[mid],
                    "type": c.event_type,
                    "created_at": now,
                    "data": _event_data(report, c, seqs[mid], info[mid][0], info[mid][1]),
                }
            )
        await record_events(conn, rows)
        blocked = [
            {
                "tenant_id": c.row["tenant_id"],
                "email": c.row["email"].lower(),
                "reason": "complaint" if c.event_type == "message.complained" else "bounce",
                "detail": _detail(c)[:1000],
                "source_message_id": c.row["message_id"],
                "created_at": now,
            }
            for c in changes
            if c.suppress
        ]
        if blocked:
            await conn.execute(
                _insert_ignore(self.db.is_sqlite, suppressions, blocked, ["tenant_id", "email"])
            )


@dataclass(frozen=True)
class _Change:
    row: dict[str, Any]
    entry: RecipientReport | None
    event_type: str
    category: BounceCategory
    bounce: bool  # the recipient's status becomes bounced
    suppress: bool


def _detail(c: _Change) -> str:
    if c.entry is None:
        return c.category.value
    return " ".join(x for x in (c.entry.status, c.entry.diagnostic) if x) or c.category.value


def _event_data(
    report: BounceReport,
    c: _Change,
    seq: int,
    tags: list[str] | None,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    row, entry = c.row, c.entry
    return {
        "message_id": row["message_id"],
        "recipient_id": row["id"],
        "recipient": row["email"],
        "status": Status.BOUNCED.value if c.bounce else row["status"],
        "reason": LATE_BOUNCE if c.bounce else c.event_type.partition(".")[2],
        "attempt": row["attempts"],
        "bounce_category": c.category.value,
        "smtp": {
            "code": _basic_code(entry.diagnostic if entry else None),
            "enhanced_code": entry.status if entry else None,
            "reply": entry.diagnostic if entry else None,
            "stage": "report",
        },
        "report": {
            "format": report.format,
            "kind": report.kind.value,
            "reporting_mta": report.reporting_mta,
            "remote_mta": entry.remote_mta if entry else None,
            "feedback_type": report.feedback_type,
        },
        "possible_duplicate": bool(row["possible_duplicate"]),
        "next_attempt_at": None,
        "tags": list(tags or []),
        "metadata": dict(metadata or {}),
        "seq": seq,
    }

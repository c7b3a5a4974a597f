"""History for the growth benchmark: N messages that were accepted and delivered over the
past days, written into a migrated, otherwise empty Kirim database.

Rows are made by the service's own code (``build_mime``, ``submission.record``, the settle
statement's column values) and moved to the state a worker leaves them in: recipients sent
(or, for a few, hard-bounced with the address suppressed), one attempt each, a queued and
a final event per recipient, bodies cleared where retention would have cleared them. They
go in with executemany through the Core tables, oldest first, a few thousand messages per
transaction.

    python -m bench.preload --database-url sqlite:////tmp/x/kirim.db --count 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from sqlalchemy import JSON

from service.db.tables import attempts, events, messages, recipients, suppressions
from service.domain.addresses import Address
from service.domain.envelope import Draft
from service.domain.ids import new_id
from service.domain.mime import build_mime, make_message_id
from service.domain.retry import RetryPolicy
from service.settings import Settings
from service.submission import record

DAY = 86_400.0
# The tenant of the key ``kirim keys create`` makes by default, which the load uses.
LOAD_TENANT = "default"
SENT_REPLY = "2.0.0 Ok: queued as {0}"
BOUNCE_REPLY = "5.1.1 <{0}>: Recipient address rejected: User unknown in virtual mailbox table"
SUBJECT = "Your receipt for order {0}"
TEXT = "Hello,\n\nThank you for your order {0}. Your receipt is below.\n" * 6
HTML = "<p>Hello,</p><p>Thank you for your order <b>{0}</b>.</p>" * 6
# Stand-ins replaced per message in bytes built once by the service's build_mime.
_ORDER, _TO, _CC, _MID = "ORDERSTANDIN", "to@standin.invalid", "cc@standin.invalid", "<mid@standin>"
_DATE = datetime(2000, 1, 1, tzinfo=UTC)
_TEMPLATES: dict[tuple[str, int], bytes] = {}


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True, slots=True)
class Shape:
    """What the stored history looks like; the defaults describe one busy sender."""

    count: int
    end: float  # the newest message's created_at (normally now)
    days: float = 10.0  # created_at spread evenly at random over this many days before end
    tenants: int = 5  # LOAD_TENANT sends most; tenant-2 … tenant-N the rest
    load_tenant_share: float = 0.8
    mailboxes: int = 200_000  # distinct addresses that receive (again and again)
    domains: int = 500
    cc_share: float = 0.1  # messages with a second recipient
    bounce_share: float = 0.01  # recipients whose address did not exist (suppressed after)
    body_retention: float = field(default_factory=lambda: float(_default("retain_bodies")))
    lifetime: float = field(default_factory=lambda: float(_default("queue_lifetime")))
    message_id_domain: str = field(default_factory=lambda: str(_default("message_id_domain")))
    seed: int = 8


@dataclass(slots=True)
class Rows:
    """The rows of one or more history messages, per table."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    recipients: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    suppressions: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: Rows) -> None:
        self.messages += other.messages
        self.recipients += other.recipients
        self.attempts += other.attempts
        self.events += other.events
        self.suppressions += other.suppressions


def created_times(shape: Shape) -> list[float]:
    """Every message's created_at, oldest first: uniform over ``days`` up to ``end``."""
    rng = random.Random(shape.seed)
    start = shape.end - shape.days * DAY
    return sorted(start + rng.random() * (shape.end - start) for _ in range(shape.count))


def _tenant(rng: random.Random, shape: Shape) -> str:
    if shape.tenants <= 1 or rng.random() < shape.load_tenant_share:
        return LOAD_TENANT
    return f"tenant-{rng.randint(2, shape.tenants)}"


def _mailbox(rng: random.Random, shape: Shape) -> str:
    n = rng.randrange(shape.mailboxes)
    return f"user{n}@mail{n % shape.domains}.example"


def _mime(sender: Address, rcpts: list[str], order: str, header_id: str, at: float) -> bytes:
    """``build_mime``'s bytes for this message: built once per sender and recipient count
    with stand-ins, which are then replaced (a hundred times cheaper than building)."""
    key = (sender.email, len(rcpts))
    template = _TEMPLATES.get(key)
    if template is None:
        draft = Draft(
            sender=sender, to=(Address(_TO),), cc=(Address(_CC),) if len(rcpts) > 1 else (),
            bcc=(), reply_to=(), subject=SUBJECT.format(_ORDER), text=TEXT.format(_ORDER),
            html=HTML.format(_ORDER), tags=("receipt",), metadata={"order": _ORDER},
        )  # fmt: skip
        template = _TEMPLATES[key] = build_mime(draft, message_id=_MID, date=_DATE)
    out = template.replace(_ORDER.encode(), order.encode()).replace(_TO.encode(), rcpts[0].encode())
    if len(rcpts) > 1:
        out = out.replace(_CC.encode(), rcpts[1].encode())
    date = format_datetime(datetime.fromtimestamp(at, UTC)).encode()
    return out.replace(_MID.encode(), header_id.encode()).replace(
        format_datetime(_DATE).encode(), date
    )


def history_message(index: int, created_at: float, rng: random.Random, shape: Shape) -> Rows:
    """One message as it stands after delivery ended: the rows ``record`` makes at accept,
    then what ``queue.settle`` writes for a 250 (or a 550 5.1.1) one to three seconds on."""
    tenant = _tenant(rng, shape)
    sender = Address(f"orders@shop{tenant.rsplit('-', 1)[-1]}.example", "Shop")
    count = 2 if rng.random() < shape.cc_share else 1
    # A bounce goes to an address nobody sends to again, so its suppression is new.
    rcpts = [f"gone{index}.{i}@mail{index % shape.domains}.example"
             if rng.random() < shape.bounce_share else _mailbox(rng, shape)
             for i in range(count)]  # fmt: skip
    order = f"{index:08d}"
    msg_id = new_id("msg", created_at)
    header_id = make_message_id(msg_id.lower().replace("_", "."), shape.message_id_domain)
    mime = _mime(sender, rcpts, order, header_id, created_at)
    item, _ = record(
        msg_id, tenant_id=tenant, now=created_at,
        policy=RetryPolicy(lifetime=shape.lifetime), sender=sender.email,
        subject=SUBJECT.format(order), header_id=header_id, mime=mime, smtputf8=False,
        recipients=[(r, "to" if i == 0 else "cc") for i, r in enumerate(dict.fromkeys(rcpts))],
        tags=["receipt"], metadata={"order": order},
    )  # fmt: skip
    out = Rows(messages=[item.message], recipients=item.recipients, events=list(item.events))
    started = created_at + 0.05 + rng.random() * 0.5
    duration = 0.05 + rng.random() * 0.3
    done = started + duration
    seq = len(item.recipients)
    for r in item.recipients:
        seq += 1
        hard = r["email"].startswith("gone")
        status = "bounced" if hard else "sent"
        code, enhanced = (550, "5.1.1") if hard else (250, "2.0.0")
        reply = BOUNCE_REPLY.format(r["email"]) if hard else SENT_REPLY.format(index)
        stage = "rcpt" if hard else "dot"
        r.update(
            status=status, attempts=1, updated_at=done, reason="smtp_permanent" if hard else "sent",
            last_code=code, last_enhanced=enhanced, last_reply=reply, last_stage=stage,
            sent_at=None if hard else done,
        )  # fmt: skip
        out.attempts.append(
            {
                "recipient_id": r["id"], "message_id": r["message_id"], "number": 1,
                "started_at": started, "duration": duration,
                "outcome": "permanent" if hard else "accepted", "stage": stage, "code": code,
                "enhanced": enhanced, "reply": reply, "possible_duplicate": False,
                "worker": f"wrk_{index % 7}",
            }
        )  # fmt: skip
        out.events.append(
            {
                "tenant_id": tenant, "message_id": r["message_id"], "recipient_id": r["id"],
                "seq": seq, "type": f"message.{status}", "created_at": done,
                "data": {
                    "message_id": r["message_id"], "recipient_id": r["id"],
                    "recipient": r["email"], "status": status, "reason": r["reason"],
                    "attempt": 1,
                    "smtp": {"code": code, "enhanced_code": enhanced, "reply": reply,
                             "stage": stage},
                    "possible_duplicate": False, "next_attempt_at": None,
                    "tags": ["receipt"], "metadata": {"order": order}, "seq": seq,
                },
            }
        )  # fmt: skip
        if hard:
            out.suppressions.append(
                {
                    "tenant_id": tenant, "email": r["email"].lower(), "reason": "bounce",
                    "detail": f"{enhanced} {reply}"[:1000],
                    "source_message_id": r["message_id"], "created_at": done,
                }
            )  # fmt: skip
    item.message["event_seq"] = seq
    if shape.end - created_at > shape.body_retention:
        item.message["mime"] = None  # retention has cleared it by now
    return out


def chunks(shape: Shape, size: int) -> Iterator[Rows]:
    """The whole history in chunks of ``size`` messages, oldest first."""
    rng = random.Random(shape.seed + 1)
    rows = Rows()
    for index, created_at in enumerate(created_times(shape)):
        rows.extend(history_message(index, created_at, rng, shape))
        if len(rows.messages) >= size:
            yield rows
            rows = Rows()
    if rows.messages:
        yield rows


TABLES = (messages, recipients, attempts, events, suppressions)


def _columns(table: Any, row: dict[str, Any]) -> tuple[list[str], list[bool]]:
    """The columns a row sets, in its key order, and which of them hold JSON."""
    names = list(row)
    return names, [isinstance(table.c[name].type, JSON) for name in names]


def records(table: Any, rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Rows as tuples for a driver's executemany or COPY, JSON columns serialised as the
    service's JSON type stores them."""
    names, is_json = _columns(table, rows[0])
    out = [
        tuple(json.dumps(v) if j else v for v, j in zip(row.values(), is_json, strict=True))
        for row in rows
    ]
    return names, out


def _by_table(rows: Rows) -> list[tuple[Any, list[dict[str, Any]]]]:
    parts = (rows.messages, rows.recipients, rows.attempts, rows.events, rows.suppressions)
    return [(t, r) for t, r in zip(TABLES, parts, strict=True) if r]


class SqliteWriter:
    """Plain sqlite3 executemany, one transaction per chunk; no sync per commit, since a
    preload that dies is started again from nothing."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF")

    async def write(self, rows: Rows) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        for table, items in _by_table(rows):
            names, values = records(table, items)
            marks = ", ".join("?" * len(names))
            sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})"
            self.conn.executemany(sql, values)
        self.conn.execute("COMMIT")

    async def close(self) -> None:
        # Everything in the main file, so a plain copy of it is the whole database. No
        # ANALYZE: Kirim never runs it, so a real SQLite database has no statistics either.
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


class PostgresWriter:
    """COPY through asyncpg, one transaction per chunk."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None

    async def open(self) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(self.url, timeout=10)

    async def write(self, rows: Rows) -> None:
        async with self.conn.transaction():
            for table, items in _by_table(rows):
                names, values = records(table, items)
                await self.conn.copy_records_to_table(table.name, records=values, columns=names)

    async def close(self) -> None:
        # What autovacuum would have done by now to a database that grew over days.
        await self.conn.execute("VACUUM ANALYZE")
        await self.conn.close()


async def preload(url: str, shape: Shape, chunk: int = 2000, progress: bool = True) -> float:
    """Write the history into the migrated database at ``url``; returns the seconds taken."""
    began = time.monotonic()
    writer: SqliteWriter | PostgresWriter
    if url.startswith("sqlite"):
        writer = SqliteWriter(url.split("///", 1)[1])
    else:
        writer = PostgresWriter(url)
        await writer.open()
    done = 0
    for rows in chunks(shape, chunk):
        await writer.write(rows)
        done += len(rows.messages)
        if progress and (done % 100_000 < chunk or done == shape.count):
            rate = done / (time.monotonic() - began)
            print(f"  preloaded {done:,} messages ({rate:,.0f}/s)", flush=True)
    await writer.close()
    return time.monotonic() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.preload", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--days", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args(argv)
    shape = Shape(count=args.count, end=time.time(), days=args.days, seed=args.seed)
    seconds = asyncio.run(preload(args.database_url, shape))
    print(f"  rows written in {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

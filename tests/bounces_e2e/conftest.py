"""Helpers for bounce tests against a live Kirim: real messages, then real reports."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from service.bounces import BounceProcessor, make_return_path
from service.bounces.service import build_processor
from service.db.engine import Database
from service.db.tables import bounce_reports, events, suppressions
from service.settings import Settings
from tests.bounces.conftest import BASE as FIXTURE_BASE
from tests.bounces.conftest import MESSAGE_ID as FIXTURE_MESSAGE_ID
from tests.bounces.conftest import RECIPIENT_ID as FIXTURE_RECIPIENT_ID
from tests.bounces.conftest import SECRET as FIXTURE_SECRET
from tests.bounces.conftest import dovecot, fixture_bytes
from tests.support.app import LiveApp, settings_for, wait_for

RETURN_PATH = "bounces@mail.kirim.test"
SECRET = "e2e-return-path-secret"
FIXTURE_TOKEN_ADDRESS = make_return_path(
    FIXTURE_BASE, FIXTURE_MESSAGE_ID, FIXTURE_RECIPIENT_ID, FIXTURE_SECRET
)
FIXTURE_ORIGINAL_ID = f"<{FIXTURE_MESSAGE_ID}@mail.example.com>"


def bounce_settings(database_url: str, smtp_url: str, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "return_path": RETURN_PATH,
        "return_path_secret": SECRET,
        "webhook_allowed_networks": "127.0.0.0/8,::1/128",
        "webhook_retry_delays": "0.3,0.6,0.9",
        "webhook_timeout": 5,
    }
    base.update(kw)
    return settings_for(database_url, smtp_url, **base)


async def send_and_wait_sent(app: LiveApp, to: list[str]) -> dict[str, Any]:
    r = await app.send(**{"from": "shop@example.com"}, to=to, subject="Receipt", text="Thanks")
    assert r.status_code == 202, r.text
    mid = r.json()["id"]

    async def all_sent() -> bool:
        view = await app.get(mid)
        return all(x["status"] == "sent" for x in view["recipients"])

    await wait_for(all_sent, within=20)
    return await app.get(mid)


def retarget(
    raw: bytes, *, message: dict[str, Any], recipient_id: str, header_id: str | None = None
) -> bytes:
    """A stored fixture report rewritten to name this test's message: the fixture's token
    becomes one for ``recipient_id`` (signed with the e2e secret) and the original
    Message-ID becomes the real one."""
    token = make_return_path(RETURN_PATH, message["id"], recipient_id, SECRET.encode())
    out = raw.replace(FIXTURE_TOKEN_ADDRESS.encode(), token.encode())
    out = out.replace(FIXTURE_ORIGINAL_ID.encode(), (header_id or message["message_id"]).encode())
    # Each use is a different report: a fresh report Message-ID (top-level header only).
    head, sep, body = out.partition(b"\n\n")
    head = re.sub(rb"(?im)^(Message-ID:[ \t]*<)", rb"\g<1>%d." % time.time_ns(), head, count=1)
    return head + sep + body


def fixture(name: str) -> bytes:
    return fixture_bytes(name)


@pytest.fixture
async def store_db(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    try:
        yield db
    finally:
        await db.dispose()


def processor_for(settings: Settings, db: Database) -> BounceProcessor:
    return build_processor(settings, db)


async def events_of(db: Database, message_id: str) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(events).where(events.c.message_id == message_id).order_by(events.c.seq)
        )
        return [dict(r) for r in rows.mappings().all()]


async def suppressed(db: Database) -> dict[str, str]:
    async with db.read() as conn:
        rows = await conn.execute(select(suppressions.c.email, suppressions.c.reason))
        return {r[0]: r[1] for r in rows.all()}


async def report_rows(db: Database) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = await conn.execute(select(bounce_reports))
        return [dict(r) for r in rows.mappings().all()]


__all__ = ["dovecot"]  # the real Dovecot fixture, shared with tests/bounces

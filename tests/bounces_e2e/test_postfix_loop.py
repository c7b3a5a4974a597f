"""The whole loop with real servers: Kirim sends through a private Postfix, the remote MX
(a loopback sink) refuses one recipient, Postfix writes the DSN to the signed return path,
the DSN lands in a real Dovecot mailbox, and Kirim's poller reads it over IMAP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from service.bounces import Decision, open_mailbox, parse_report, parse_return_path
from service.bounces.mailbox import Mailbox, MailboxItem
from service.db.engine import Database
from service.db.tables import suppressions
from tests.bounces.capture import Captured, CaptureHandler, start_capture
from tests.bounces.servers import Dovecot, Postfix, free_port, start_postfix, stop_postfix
from tests.bounces_e2e.conftest import (
    RETURN_PATH,
    SECRET,
    bounce_settings,
    events_of,
    fixture,
    processor_for,
    report_rows,
)
from tests.support.app import LiveApp, live_app, wait_for
from tests.support.http_receiver import HttpReceiver

pytestmark = pytest.mark.slow

MISSING = "nosuchuser@remote.example.org"
PRESENT = "reader@remote.example.org"


@pytest.fixture
def relay() -> Iterator[tuple[Postfix, CaptureHandler]]:
    handler = CaptureHandler(
        refuse={MISSING: f"550 5.1.1 <{MISSING}>: Recipient address rejected: User unknown"}
    )
    port = free_port()
    controller = start_capture(handler, port)
    postfix = start_postfix(port)
    try:
        yield postfix, handler
    finally:
        stop_postfix(postfix)
        controller.stop()


async def _dsn_for(handler: CaptureHandler, ids: tuple[str, str], postfix: Postfix) -> Captured:
    """The DSN Postfix sent to the return path that names ``ids`` (message, recipient)."""

    def names(m: Captured) -> bool:
        secret = SECRET.encode()
        return any(parse_return_path(a, RETURN_PATH, secret) == ids for a in m.rcpt_tos)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = next((m for m in handler.messages if names(m)), None)
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("no DSN arrived; postfix log:\n" + postfix.log()[-3000:])


async def _send(app: LiveApp) -> dict[str, Any]:
    r = await app.send(
        **{"from": "shop@example.com"}, to=[MISSING, PRESENT], subject="Order", text="Thanks"
    )
    assert r.status_code == 202, r.text
    mid = r.json()["id"]

    async def all_sent() -> bool:
        return all(x["status"] == "sent" for x in (await app.get(mid))["recipients"])

    await wait_for(all_sent, within=30)
    return await app.get(mid)


async def test_postfix_dsn_bounces_the_right_recipient(
    database_url: str, relay: tuple[Postfix, CaptureHandler], dovecot: Dovecot
) -> None:
    postfix, handler = relay
    with HttpReceiver() as hooks:
        settings = bounce_settings(
            database_url,
            f"smtp://127.0.0.1:{postfix.smtp_port}?tls=none",
            bounce_mailbox_url=dovecot.url("imap", "?tls=none"),
            bounce_poll_interval=0.3,
        )
        async with live_app(settings) as app:
            r = await app.client.post(
                "/v1/webhooks", json={"url": hooks.url_for("/h"), "events": ["message.bounced"]}
            )
            assert r.status_code == 201, r.text
            secret = r.json()["secret"]
            sent = await _send(app)
            by_email = {x["email"]: x for x in sent["recipients"]}
            missing_id = by_email[MISSING]["id"]
            dsn = await _dsn_for(handler, (sent["id"], missing_id), postfix)
            report = parse_report(dsn.data)
            assert report.format == "dsn"
            dovecot.deliver(dsn.data)
            # A report that names nothing of ours goes to the Unmatched folder, kept.
            dovecot.deliver(fixture("autoreply.eml"))

            async def bounced() -> bool:
                view = await app.get(sent["id"])
                return any(x["status"] == "bounced" for x in view["recipients"])

            await wait_for(bounced, within=30)
            view = await app.get(sent["id"])
            states = {x["email"]: x for x in view["recipients"]}
            assert states[MISSING]["status"] == "bounced"
            assert states[MISSING]["reason"] == "late_bounce"
            assert states[MISSING]["bounce_category"] == "mailbox_unknown"
            assert states[MISSING]["last_reply"]["enhanced_code"] == "5.1.1"
            assert states[PRESENT]["status"] == "sent"
            assert states[PRESENT]["bounce_category"] is None

            [got] = await hooks.wait_for_async(1, within=30)
            payload = Webhook(secret).verify(got.body, got.headers)
            assert payload["type"] == "message.bounced"
            assert payload["data"]["recipient_id"] == missing_id
            assert payload["data"]["reason"] == "late_bounce"
            assert payload["data"]["bounce_category"] == "mailbox_unknown"

            async def moved() -> bool:
                return (
                    dovecot.messages() == []
                    and len(dovecot.messages("Processed")) == 1
                    and len(dovecot.messages("Unmatched")) == 1
                )

            await wait_for(moved, within=30)
            db = Database(database_url)
            try:
                async with db.read() as conn:
                    rows = (await conn.execute(select(suppressions))).mappings().all()
                assert [(x["email"], x["reason"]) for x in rows] == [(MISSING, "bounce")]
                # Suppressed from now on: a new send to the address is not attempted.
                r = await app.send(
                    **{"from": "shop@example.com"}, to=[MISSING], subject="Again", text="x"
                )
                assert r.status_code == 202, r.text
                again = await app.get(r.json()["id"])
                assert again["recipients"][0]["status"] == "suppressed"
            finally:
                await db.dispose()
    unmatched = parse_report(dovecot.messages("Unmatched")[0])
    assert unmatched.report_message_id == parse_report(fixture("autoreply.eml")).report_message_id


class _CrashBeforeDelete:
    """A mailbox whose process dies right after the report's effects were committed."""

    def __init__(self, inner: Mailbox) -> None:
        self.inner = inner

    async def fetch(self) -> list[MailboxItem]:
        return await self.inner.fetch()

    async def done(self, item: MailboxItem) -> None:
        raise _Crash

    async def set_aside(self, item: MailboxItem) -> None:
        await self.inner.set_aside(item)

    async def close(self) -> None:
        await self.inner.close()


class _Crash(BaseException):
    pass


async def test_crash_between_commit_and_delete(
    database_url: str, relay: tuple[Postfix, CaptureHandler], dovecot: Dovecot
) -> None:
    postfix, handler = relay
    settings = bounce_settings(
        database_url,
        f"smtp://127.0.0.1:{postfix.smtp_port}?tls=none",
        bounce_mailbox_url=dovecot.url("imap", "?tls=none"),
    )
    # The app's own poller is off (no mailbox URL there); this test drives it by hand.
    app_settings = bounce_settings(database_url, f"smtp://127.0.0.1:{postfix.smtp_port}?tls=none")
    async with live_app(app_settings) as app:
        sent = await _send(app)
        missing_id = {x["email"]: x["id"] for x in sent["recipients"]}[MISSING]
        dsn = await _dsn_for(handler, (sent["id"], missing_id), postfix)
        dovecot.deliver(dsn.data)
        db = Database(database_url)
        try:
            url = settings.bounce_mailbox_url.get_secret_value()
            first = _CrashBeforeDelete(open_mailbox(url))
            with pytest.raises(_Crash):
                await processor_for(settings, db).drain(first)
            await first.close()
            after_crash = await events_of(db, sent["id"])
            assert after_crash[-1]["type"] == "message.bounced"
            assert len(dovecot.messages()) == 1  # not deleted: the process died first

            # Restart: a new reader and processor see the same report again.
            mailbox = open_mailbox(url)
            try:
                outcomes = await processor_for(settings, db).drain(mailbox)
            finally:
                await mailbox.close()
            assert [o.decision for o in outcomes] == [Decision.DONE]
            assert await events_of(db, sent["id"]) == after_crash  # nothing twice
            assert len(await report_rows(db)) == 1
            assert dovecot.messages() == []
            assert len(dovecot.messages("Processed")) == 1
            view = await app.get(sent["id"])
            assert {x["email"]: x["status"] for x in view["recipients"]} == {
                MISSING: "bounced",
                PRESENT: "sent",
            }
        finally:
            await db.dispose()

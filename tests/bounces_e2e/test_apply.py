"""Reports through parse -> match -> apply against a live Kirim on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from service.bounces import Decision, ReportKind, parse_report, parse_return_path
from service.bounces.mailbox import MailboxError
from service.bounces.service import open_bounce_mailbox
from service.db.engine import Database
from tests.bounces.servers import Dovecot
from tests.bounces_e2e.conftest import (
    FIXTURE_ORIGINAL_ID,
    RETURN_PATH,
    SECRET,
    bounce_settings,
    events_of,
    fixture,
    processor_for,
    report_rows,
    retarget,
    send_and_wait_sent,
    suppressed,
)
from tests.support.app import live_app, wait_for
from tests.support.smtpd import RecordingSmtpServer


async def test_signed_return_path_per_recipient(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        settings = bounce_settings(database_url, smtp.url)
        async with live_app(settings) as app:
            view = await send_and_wait_sent(app, ["a@example.org", "b@example.org"])
    got = smtp.handler.messages()
    assert len(got) == 2  # one transaction per recipient: the envelope senders differ
    by_rcpt = {m.rcpt_tos[0]: m.mail_from for m in got}
    for r in view["recipients"]:
        ids = parse_return_path(by_rcpt[r["email"]], RETURN_PATH, SECRET.encode())
        assert ids == (view["id"], r["id"])


async def test_without_return_path_the_sender_is_mail_from(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        settings = bounce_settings(database_url, smtp.url, return_path="")
        async with live_app(settings) as app:
            await send_and_wait_sent(app, ["a@example.org", "b@example.org"])
    [only] = smtp.handler.messages()
    assert only.mail_from == "shop@example.com"
    assert sorted(only.rcpt_tos) == ["a@example.org", "b@example.org"]


async def test_delayed_complaint_and_text_bounce(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        settings = bounce_settings(database_url, smtp.url)
        async with live_app(settings) as app:
            slow = await send_and_wait_sent(app, ["slow@far.example.org"])
            reader = await send_and_wait_sent(app, ["reader@isp.example.net"])
            qmail = await send_and_wait_sent(app, ["gone@qmail.example.org"])
            db = Database(database_url)
            try:
                proc = processor_for(settings, db)
                delayed = retarget(
                    fixture("dsn_delayed.eml"),
                    message=slow,
                    recipient_id=slow["recipients"][0]["id"],
                )
                out = await proc.process(delayed)
                assert out.decision is Decision.DONE
                view = await app.get(slow["id"])
                assert view["recipients"][0]["status"] == "sent"  # terminal state kept
                evs = await events_of(db, slow["id"])
                assert [e["type"] for e in evs][-1] == "message.delayed"
                assert evs[-1]["data"]["status"] == "sent"
                assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))

                complaint = retarget(
                    fixture("arf_complaint.eml"),
                    message=reader,
                    recipient_id=reader["recipients"][0]["id"],
                )
                out = await proc.process(complaint)
                assert out.decision is Decision.DONE
                view = await app.get(reader["id"])
                assert view["recipients"][0]["status"] == "sent"
                evs = await events_of(db, reader["id"])
                assert evs[-1]["type"] == "message.complained"
                assert evs[-1]["data"]["bounce_category"] == "complaint"

                # qmail's text bounce, matched by the original Message-ID alone.
                text = retarget(
                    fixture("qmail.eml"), message=qmail, recipient_id=qmail["recipients"][0]["id"]
                ).replace(b"bounces+", b"someone-else+")
                out = await proc.process(text)
                assert out.decision is Decision.DONE, out
                assert [m.via for m in out.matches] == ["message_id"]
                view = await app.get(qmail["id"])
                [r] = view["recipients"]
                assert (r["status"], r["reason"]) == ("bounced", "late_bounce")
                assert r["bounce_category"] == "mailbox_unknown"
                evs = await events_of(db, qmail["id"])
                assert evs[-1]["type"] == "message.bounced"
                assert evs[-1]["data"]["bounce_category"] == "mailbox_unknown"

                assert await suppressed(db) == {
                    "reader@isp.example.net": "complaint",
                    "gone@qmail.example.org": "bounce",
                }
                assert len(await report_rows(db)) == 3
            finally:
                await db.dispose()


async def test_same_report_twice_changes_nothing_twice(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        settings = bounce_settings(database_url, smtp.url)
        async with live_app(settings) as app:
            sent = await send_and_wait_sent(app, ["reader@isp.example.net"])
            db = Database(database_url)
            try:
                proc = processor_for(settings, db)
                raw = retarget(
                    fixture("arf_complaint.eml"),
                    message=sent,
                    recipient_id=sent["recipients"][0]["id"],
                )
                await proc.process(raw)
                before = await events_of(db, sent["id"])
                out = await proc.process(raw)
                assert out.decision is Decision.DONE  # applied before: nothing more to do
                assert await events_of(db, sent["id"]) == before
                assert len(await report_rows(db)) == 1
            finally:
                await db.dispose()


async def test_forged_token_and_foreign_report_are_unmatched(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        settings = bounce_settings(database_url, smtp.url)
        async with live_app(settings) as app:
            sent = await send_and_wait_sent(app, ["missing.person@gmail.example"])
            db = Database(database_url)
            try:
                proc = processor_for(settings, db)
                rid = sent["recipients"][0]["id"]
                raw = retarget(fixture("gmail.eml"), message=sent, recipient_id=rid)
                # Flip one token character: the MAC no longer verifies.
                head, _, tail = raw.partition(b"bounces+")
                flipped = bytes([tail[0] ^ 1]) + tail[1:]
                forged = head + b"bounces+" + flipped.replace(b"bounces+", b"bounces+x")
                out = await proc.process(forged)
                assert out.decision is Decision.UNMATCHED
                view = await app.get(sent["id"])
                assert view["recipients"][0]["status"] == "sent"
                assert await suppressed(db) == {}
                assert await report_rows(db) == []
            finally:
                await db.dispose()


REPORT_FIXTURES = [
    "arf_complaint.eml",
    "dsn_delayed.eml",
    "exchange.eml",
    "exim.eml",
    "exim_delay.eml",
    "gmail.eml",
    "postfix_dsn.eml",
    "qmail.eml",
]
EXPECTED_EVENT = {
    ReportKind.BOUNCE: "message.bounced",
    ReportKind.DELAY: "message.delayed",
    ReportKind.COMPLAINT: "message.complained",
}


async def test_every_report_fixture_matches_and_applies(database_url: str) -> None:
    """Match rate on the stored reports: each names our recipient and applies once."""
    matched = 0
    with RecordingSmtpServer() as smtp:
        settings = bounce_settings(database_url, smtp.url)
        async with live_app(settings) as app:
            db = Database(database_url)
            try:
                proc = processor_for(settings, db)
                for name in REPORT_FIXTURES:
                    # The API refuses .test addresses; the Postfix fixture's remote uses one.
                    stored = fixture(name).replace(b"@remote.kirim.test", b"@remote.example.org")
                    parsed = parse_report(stored)
                    entry = parsed.recipients[0]
                    sent = await send_and_wait_sent(app, [r.address for r in parsed.recipients])
                    rid = next(r["id"] for r in sent["recipients"] if r["email"] == entry.address)
                    raw = retarget(stored, message=sent, recipient_id=rid)
                    out = await proc.process(raw)
                    assert out.decision is Decision.DONE, name
                    assert [m.recipient_id for m in out.matches] == [rid], name
                    last = (await events_of(db, sent["id"]))[-1]
                    assert last["type"] == EXPECTED_EVENT[parsed.kind], name
                    assert last["recipient_id"] == rid, name
                    view = await app.get(sent["id"])
                    state = next(r for r in view["recipients"] if r["id"] == rid)
                    bounced = parsed.kind is ReportKind.BOUNCE
                    assert state["status"] == ("bounced" if bounced else "sent"), name
                    if bounced:
                        assert state["bounce_category"] == entry.category, name
                    matched += 1
            finally:
                await db.dispose()
    assert matched == len(REPORT_FIXTURES)


async def test_pop3_poller_deletes_applied_and_keeps_unmatched(
    database_url: str, dovecot: Dovecot
) -> None:
    with RecordingSmtpServer() as smtp:
        settings = bounce_settings(
            database_url,
            smtp.url,
            bounce_mailbox_url=dovecot.url("pop3", "?tls=none"),
            bounce_poll_interval=0.2,
        )
        async with live_app(settings) as app:
            sent = await send_and_wait_sent(app, ["missing.person@gmail.example"])
            rid = sent["recipients"][0]["id"]
            dovecot.deliver(retarget(fixture("gmail.eml"), message=sent, recipient_id=rid))
            dovecot.deliver(fixture("autoreply.eml"))

            async def applied_and_deleted() -> bool:
                view = await app.get(sent["id"])
                return view["recipients"][0]["status"] == "bounced" and len(dovecot.messages()) == 1

            await wait_for(applied_and_deleted, within=20)
            # POP3 cannot move: the unmatched report stays on the server, skipped next time.
            [left] = dovecot.messages()
            assert parse_report(left).subject == "Out of office"


async def test_without_return_path_reports_match_by_message_id(database_url: str) -> None:
    with RecordingSmtpServer() as smtp:
        settings = bounce_settings(database_url, smtp.url, return_path="")
        async with live_app(settings) as app:
            sent = await send_and_wait_sent(app, ["gone@qmail.example.org"])
            db = Database(database_url)
            try:
                raw = fixture("qmail.eml").replace(
                    FIXTURE_ORIGINAL_ID.encode(), sent["message_id"].encode()
                )
                out = await processor_for(settings, db).process(raw)
                assert out.decision is Decision.DONE
                assert [(m.recipient_id, m.via) for m in out.matches] == [
                    (sent["recipients"][0]["id"], "message_id")
                ]
                view = await app.get(sent["id"])
                assert view["recipients"][0]["status"] == "bounced"
            finally:
                await db.dispose()


def test_bad_mailbox_url_fails_at_startup_without_echoing_it(sqlite_url: str) -> None:
    settings = bounce_settings(
        sqlite_url, "smtp://127.0.0.1:9?tls=none", bounce_mailbox_url="imap://u:hunter2@/INBOX"
    )
    with pytest.raises(MailboxError) as caught:
        open_bounce_mailbox(settings)
    assert "hunter2" not in str(caught.value)

"""/metrics over HTTP from a live app delivering to a real SMTP server."""

from __future__ import annotations

import httpx

from service.db.engine import Database
from tests.operations.helpers import scrape, value
from tests.support.app import live_app, settings_for, wait_for
from tests.support.smtpd import RecordingHandler, RecordingSmtpServer


def _reply(rcpt: str) -> str:
    if rcpt.startswith("later@"):
        return "451 4.2.0 Mailbox busy, try later"
    if rcpt.startswith("bad@"):
        return "550 5.1.1 No such user"
    return "250 2.1.5 OK"


async def test_metrics_move_across_send_deferral_and_bounce(database_url: str) -> None:
    with RecordingSmtpServer(RecordingHandler(rcpt_reply=_reply)) as smtp:
        # A long retry delay keeps the deferred recipient waiting while we look.
        settings = settings_for(database_url, smtp.url, retry_min_delay=600, retry_max_delay=900)
        async with live_app(settings) as app:
            before = await scrape(app.client)
            assert value(before, "kirim_queue_stats_up") == 1
            ids = []
            for to in ("ok@example.com", "later@example.com", "bad@example.com"):
                r = await app.send(
                    **{"from": "s@example.org", "to": [to], "subject": "m", "text": "x"}
                )
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])

            async def settled() -> bool:
                states = [(await app.get(i))["recipients"][0]["status"] for i in ids]
                return states == ["sent", "deferred", "bounced"]

            await wait_for(settled)
            after = await scrape(app.client)
            # The scrape cache may hold the pre-send queue for a moment.
            await wait_for(lambda: _waiting_normal(app.client), within=5)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("kirim_accepted_messages_total") == 3
    assert delta("kirim_accepted_recipients_total") == 3
    assert delta("kirim_deliveries_total", status="sent", status_class="2") == 1
    assert delta("kirim_deliveries_total", status="deferred", status_class="4") == 1
    assert delta("kirim_deliveries_total", status="bounced", status_class="5") == 1
    observed = sum(
        delta("kirim_attempt_duration_seconds_count", outcome=o)
        for o in ("accepted", "temporary", "permanent")
    )
    assert observed == 3
    assert value(after, "kirim_recipients_sending") == 0


async def _waiting_normal(client: httpx.AsyncClient) -> bool:
    now = await scrape(client)
    return value(now, "kirim_queue_recipients", priority="normal", state="waiting") == 1


async def test_queue_gauges_count_due_recipients_and_their_age(sqlite_url: str) -> None:
    import time

    from tests.operations.helpers import insert_queue

    db = Database(sqlite_url)
    try:
        now = time.time()
        await insert_queue(
            db, count=7, domain="q.test", created_at=now - 100, next_attempt_at=now - 90
        )
        await insert_queue(db, count=2, domain="q.test", created_at=now, next_attempt_at=now + 900)
    finally:
        await db.dispose()
    # No workers: the queue stays as written.
    async with live_app(settings_for(sqlite_url), run_workers=False) as app:
        s = await scrape(app.client)
    assert value(s, "kirim_queue_recipients", priority="normal", state="due") == 7
    assert value(s, "kirim_queue_recipients", priority="normal", state="waiting") == 2
    assert value(s, "kirim_queue_recipients", priority="high", state="due") == 0
    age = value(s, "kirim_queue_oldest_due_age_seconds", priority="normal")
    assert 89 <= age < 200


async def test_batch_accepts_are_counted(database_url: str) -> None:
    with RecordingSmtpServer(RecordingHandler()) as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:
            before = await scrape(app.client)
            one = {"from": "s@example.org", "subject": "m", "text": "x"}
            r = await app.client.post(
                "/v1/messages/batch",
                json={
                    "messages": [
                        {**one, "to": ["a@example.com", "b@example.com"]},
                        {**one, "to": ["c@example.com"]},
                        {**one, "to": ["not an address"]},
                    ]
                },
            )
            assert r.status_code == 202, r.text
            after = await scrape(app.client)

    def delta(name: str) -> float:
        return value(after, name) - value(before, name)

    # The invalid item is not accepted, so not counted.
    assert delta("kirim_accepted_messages_total") == 2
    assert delta("kirim_accepted_recipients_total") == 3

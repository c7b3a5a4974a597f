"""Single sends check the suppression list inside the group commit.

Concurrent requests of several tenants share one transaction and one SELECT; each tenant's
list must still apply to its own recipients only, and the answer (also the one stored for
an Idempotency-Key) must say what was stored.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.db.engine import Database
from service.db.tables import events, recipients
from tests.sending.conftest import msg
from tests.support.app import live_app, make_key, settings_for

pytestmark = pytest.mark.asyncio


async def _suppress(client: httpx.AsyncClient, key: str, email: str) -> None:
    r = await client.post(
        "/v1/suppressions",
        json={"email": email, "reason": "manual"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 201, r.text


async def _stored(url: str) -> tuple[dict[str, str], dict[str, str]]:
    """(recipient id -> status, recipient id -> event type) as committed."""
    db = Database(url)
    try:
        async with db.read() as conn:
            rs = (await conn.execute(select(recipients.c.id, recipients.c.status))).all()
            es = (await conn.execute(select(events.c.recipient_id, events.c.type))).all()
    finally:
        await db.dispose()
    return {i: s for i, s in rs}, {i: t for i, t in es}


async def test_concurrent_tenants_get_their_own_list(database_url: str) -> None:
    async with live_app(settings_for(database_url), run_workers=False) as app:
        keys = {t: await make_key(database_url, tenant=t) for t in ("a", "b")}
        await _suppress(app.client, keys["a"], "Blocked@example.com")
        await _suppress(app.client, keys["b"], "other@example.com")

        async def send(tenant: str, i: int) -> dict[str, Any]:
            body = msg(f"u{i}@example.com", cc=["blocked@example.com", "other@example.com"])
            r = await app.client.post(
                "/v1/messages", json=body, headers={"Authorization": f"Bearer {keys[tenant]}"}
            )
            assert r.status_code == 202, r.text
            answer: dict[str, Any] = r.json()
            return answer

        jobs = [send(t, i) for i in range(15) for t in ("a", "b")]
        answers = await asyncio.gather(*jobs)
        rows, types = await _stored(database_url)

    for n, answer in enumerate(answers):
        tenant = "ab"[n % 2]
        blocked = "blocked@example.com" if tenant == "a" else "other@example.com"
        states = {r["email"]: r["status"] for r in answer["recipients"]}
        assert states.pop(blocked) == "suppressed", (tenant, answer)
        assert set(states.values()) == {"queued"}, (tenant, answer)
        assert answer["status"] == "queued"
        # The answer is what was committed, events included.
        for r in answer["recipients"]:
            assert rows[r["id"]] == r["status"]
            assert types[r["id"]] == f"message.{r['status']}"


async def test_idempotent_replay_repeats_the_suppressed_answer(database_url: str) -> None:
    async with live_app(settings_for(database_url), run_workers=False) as app:
        await _suppress(app.client, app.key, "gone@example.com")
        headers = {"Idempotency-Key": "k-suppressed"}
        body = msg("gone@example.com")
        first = await app.client.post("/v1/messages", json=body, headers=headers)
        assert first.status_code == 202
        assert first.json()["status"] == "suppressed"
        again = await app.client.post("/v1/messages", json=body, headers=headers)
        assert again.status_code == 202
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()

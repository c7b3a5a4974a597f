"""Idempotency-Key on POST /v1/messages over real HTTP and SMTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from sqlalchemy import select

from service.db.engine import Database
from service.db.tables import idempotency_keys, messages
from service.idempotency import Idempotency
from tests.support.app import live_app, settings_for, wait_for
from tests.support.smtpd import RecordingSmtpServer
from tests.tenancy.helpers import GOOD, bearer, count, new_key

pytestmark = pytest.mark.asyncio


def _idem(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def test_sequential_replay_survives_a_restart(database_url: str) -> None:
    key = str(uuid.uuid4())
    with RecordingSmtpServer() as smtp:
        settings = settings_for(database_url, smtp.url)
        async with live_app(settings) as app:
            first = await app.client.post("/v1/messages", json=GOOD, headers=_idem(key))
            assert first.status_code == 202 and "idempotent-replayed" not in first.headers
            again = await app.client.post("/v1/messages", json=GOOD, headers=_idem(key))
            assert again.status_code == 202
            assert again.headers["idempotent-replayed"] == "true"
            assert again.json() == first.json()
            mid = first.json()["id"]

            async def sent() -> bool:
                return (await app.get(mid))["status"] == "sent"

            await wait_for(sent)
            plain_key = app.key
        # A new process (same database) still replays.
        async with live_app(settings) as app:
            r = await app.client.post(
                "/v1/messages", json=GOOD, headers={**_idem(key), **bearer(plain_key)}
            )
            assert r.status_code == 202 and r.json()["id"] == mid
            assert r.headers["idempotent-replayed"] == "true"
            # Key order and omitted defaults do not change the fingerprint.
            reordered = {"text": "t", "subject": "s", "to": ["b@example.com"], "cc": []}
            reordered["from"] = "a@example.com"
            r = await app.client.post(
                "/v1/messages", json=reordered, headers={**_idem(key), **bearer(plain_key)}
            )
            assert r.status_code == 202 and r.json()["id"] == mid
            await asyncio.sleep(0.3)
    assert len(smtp.handler.messages()) == 1
    assert await count(database_url, messages) == 1


async def test_mismatch_validation_and_malformed_keys(database_url: str) -> None:
    async with live_app(settings_for(database_url), run_workers=False) as app:
        r = await app.client.post("/v1/messages", json=GOOD, headers=_idem("k1"))
        assert r.status_code == 202
        r = await app.client.post(
            "/v1/messages", json={**GOOD, "subject": "other"}, headers=_idem("k1")
        )
        assert r.status_code == 422
        assert r.json()["type"].endswith("idempotency-key-reused")

        # A request that fails validation stores no key: the corrected retry succeeds.
        bad = {**GOOD, "to": ["not-an-address"]}
        assert (
            await app.client.post("/v1/messages", json=bad, headers=_idem("k2"))
        ).status_code == 422
        schema_bad = {**GOOD, "bogus": 1}
        r = await app.client.post("/v1/messages", json=schema_bad, headers=_idem("k2"))
        assert r.status_code == 422
        r = await app.client.post("/v1/messages", json=GOOD, headers=_idem("k2"))
        assert r.status_code == 202 and "idempotent-replayed" not in r.headers

        for malformed in ("", "x" * 256, "a\tb"):
            r = await app.client.post("/v1/messages", json=GOOD, headers=_idem(malformed))
            assert r.status_code == 400, repr(malformed)
            assert r.json()["type"].endswith("invalid-idempotency-key")
        r = await app.client.post(
            "/v1/messages", json=GOOD, headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
        )
        assert r.status_code == 400
        r = await app.client.post("/v1/messages", json=GOOD, headers=_idem("x" * 255))
        assert r.status_code == 202

        # Keys belong to a tenant: another tenant's same key is a separate request.
        other, _ = await new_key(database_url, tenant="other")
        r = await app.client.post(
            "/v1/messages", json={**GOOD, "subject": "b"}, headers={**_idem("k1"), **bearer(other)}
        )
        assert r.status_code == 202 and "idempotent-replayed" not in r.headers
    assert await count(database_url, messages) == 4
    assert await count(database_url, idempotency_keys) == 4


async def test_fifty_parallel_requests_make_one_message(database_url: str) -> None:
    key = str(uuid.uuid4())
    with RecordingSmtpServer() as smtp:
        async with live_app(settings_for(database_url, smtp.url)) as app:

            async def post() -> httpx.Response:
                return await app.client.post("/v1/messages", json=GOOD, headers=_idem(key))

            results = await asyncio.gather(*(post() for _ in range(50)))
            codes = sorted(r.status_code for r in results)
            assert set(codes) <= {202, 409}, codes
            accepted = [r for r in results if r.status_code == 202]
            assert len({r.json()["id"] for r in accepted}) == 1
            assert sum("idempotent-replayed" not in r.headers for r in accepted) == 1
            for r in results:
                if r.status_code == 409:
                    assert r.headers["retry-after"] == "1"
            mid = accepted[0].json()["id"]

            async def sent() -> bool:
                return (await app.get(mid))["status"] == "sent"

            await wait_for(sent)
            # The 409s retry and get the replay.
            r = await post()
            assert r.status_code == 202 and r.json()["id"] == mid
            await asyncio.sleep(0.3)
    assert len(smtp.handler.messages()) == 1
    assert await count(database_url, messages) == 1


async def test_parallel_requests_across_two_processes(database_url: str) -> None:
    # Two app instances share the database but not the in-flight map: the unique key
    # decides, and the loser replays the winner's response.
    key = str(uuid.uuid4())
    settings = settings_for(database_url)
    async with (
        live_app(settings, run_workers=False) as one,
        live_app(settings, run_workers=False) as two,
    ):

        async def post(app: object) -> httpx.Response:
            client: httpx.AsyncClient = app.client  # type: ignore[attr-defined]
            return await client.post("/v1/messages", json=GOOD, headers=_idem(key))

        results = await asyncio.gather(*(post(one if i % 2 else two) for i in range(20)))
        codes = {r.status_code for r in results}
        assert codes <= {202, 409}, codes
        ids = {r.json()["id"] for r in results if r.status_code == 202}
        assert len(ids) == 1
    assert await count(database_url, messages) == 1


async def test_retention_and_pruning(database_url: str) -> None:
    settings = settings_for(database_url, idempotency_ttl=0.5)
    async with live_app(settings, run_workers=False) as app:
        first = await app.client.post("/v1/messages", json=GOOD, headers=_idem("short"))
        await asyncio.sleep(0.7)
        # Past retention the key is free: a new message, documented behaviour.
        second = await app.client.post("/v1/messages", json=GOOD, headers=_idem("short"))
        assert second.status_code == 202 and "idempotent-replayed" not in second.headers
        assert second.json()["id"] != first.json()["id"]
        await app.client.post("/v1/messages", json=GOOD, headers=_idem("other"))
    assert await count(database_url, idempotency_keys) == 2
    db = Database(database_url)
    try:
        assert await Idempotency(db, ttl=0.5).prune(time.time() + 1) == 2
        async with db.read() as conn:
            assert (await conn.execute(select(idempotency_keys))).all() == []
    finally:
        await db.dispose()

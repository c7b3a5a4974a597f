"""Rate limits: 429 with Retry-After, nothing created, recovery; shared on PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.db.tables import messages
from tests.support.app import live_app, settings_for
from tests.tenancy.helpers import GOOD, bearer, count, new_key

pytestmark = pytest.mark.asyncio


async def test_per_key_limit_refuses_and_recovers(database_url: str) -> None:
    settings = settings_for(database_url, rate_limit_per_key="0.5,3")
    async with live_app(settings, run_workers=False) as app:
        results = [await app.client.post("/v1/messages", json=GOOD) for _ in range(6)]
        codes = [r.status_code for r in results]
        assert codes[:3] == [202, 202, 202] and set(codes[3:]) == {429}, codes
        refused = results[-1]
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert 1 <= int(refused.headers["retry-after"]) <= 2
        # Another key of the same tenant has its own budget (no tenant limit here).
        other, _ = await new_key(database_url, tenant="default")
        r = await app.client.post("/v1/messages", json=GOOD, headers=bearer(other))
        assert r.status_code == 202
        assert await count(database_url, messages) == 4
        await asyncio.sleep(int(refused.headers["retry-after"]))
        assert (await app.client.post("/v1/messages", json=GOOD)).status_code == 202
    assert await count(database_url, messages) == 5


async def test_tenant_limit_spans_keys_and_spares_other_tenants(database_url: str) -> None:
    settings = settings_for(database_url, rate_limit_per_tenant="0.1,4", rate_limit_per_key="100")
    async with live_app(settings, run_workers=False) as app:
        k1, _ = await new_key(database_url, tenant="busy")
        k2, _ = await new_key(database_url, tenant="busy")
        quiet, _ = await new_key(database_url, tenant="quiet")
        codes = []
        for i in range(8):
            key = k1 if i % 2 else k2
            r = await app.client.post("/v1/messages", json=GOOD, headers=bearer(key))
            codes.append(r.status_code)
        assert codes.count(202) == 4 and codes.count(429) == 4, codes
        r = await app.client.post("/v1/messages", json=GOOD, headers=bearer(quiet))
        assert r.status_code == 202
        # Reads count too, and are refused the same way.
        assert (await app.client.get("/v1/messages", headers=bearer(k1))).status_code == 429
    assert await count(database_url, messages) == 5


async def test_limit_is_shared_by_processes_on_postgresql(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite is single-node: its buckets live in the process")
    settings = settings_for(database_url, rate_limit_per_key="0.2,10")
    async with (
        live_app(settings, run_workers=False) as one,
        live_app(settings, run_workers=False) as two,
    ):
        key, _ = await new_key(database_url, tenant="t")

        async def post(client: httpx.AsyncClient) -> int:
            r = await client.post("/v1/messages", json=GOOD, headers=bearer(key))
            return r.status_code

        codes = await asyncio.gather(
            *(post(one.client if i % 2 else two.client) for i in range(30))
        )
        # Ten tokens in total, whichever process served the request.
        assert sorted(codes).count(202) == 10 and codes.count(429) == 20, codes
    assert await count(database_url, messages) == 10

"""/readyz: ready only with a reachable database at this code's schema; /healthz stays cheap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from service.db.migrate import head_revision, upgrade
from tests.support.app import live_app, settings_for


async def test_readyz_fails_while_migrations_are_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    await asyncio.to_thread(upgrade, url, "0004")
    async with live_app(settings_for(url), run_workers=False) as app:
        r = await app.client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["schema"] == "0004"
        assert r.json()["expected_schema"] == head_revision()
        assert (await app.client.get("/healthz")).status_code == 200
    await asyncio.to_thread(upgrade, url)
    async with live_app(settings_for(url), run_workers=False) as app:
        r = await app.client.get("/readyz")
        assert r.status_code == 200 and r.json()["database"] == "ok"


async def test_readyz_fails_when_the_database_is_unreachable(sqlite_url: str) -> None:
    # A port nothing listens on: the pool cannot connect.
    from tests.support.ports import free_port

    bad = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    settings = settings_for(sqlite_url)
    async with live_app(settings, run_workers=False) as app:
        assert (await app.client.get("/readyz")).status_code == 200
    settings = settings_for(bad, database_connect_timeout_ms=500)
    from service.api.app import create_app

    app2 = create_app(settings, run_workers=False)
    transport = httpx.ASGITransport(app=app2)
    client = httpx.AsyncClient(transport=transport, base_url="http://kirim.test")
    async with app2.router.lifespan_context(app2), client:
        r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"

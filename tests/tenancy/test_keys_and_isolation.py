"""Scoped keys and tenant isolation over real HTTP, on SQLite and PostgreSQL.

Another tenant's object answers 404 (never 403, so ids leak nothing); lists hold only the
caller's objects; a key lacking a scope gets 403; revoked and expired keys get 401 at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.db.engine import Database
from service.db.tables import api_keys, messages
from tests.support.app import live_app, settings_for
from tests.tenancy.helpers import GOOD, bearer, count, new_key

pytestmark = pytest.mark.asyncio

ALLOWED = "127.0.0.0/8"


async def _as(app: Any, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    response: httpx.Response = await app.client.request(method, path, headers=bearer(key), **kw)
    return response


async def test_cross_tenant_matrix(database_url: str) -> None:
    settings = settings_for(database_url, webhook_allowed_networks=ALLOWED)
    async with live_app(settings, run_workers=False) as app:
        a, a_id = await new_key(database_url, tenant="tenant-a")
        b, b_id = await new_key(database_url, tenant="tenant-b")
        r = await _as(app, b, "POST", "/v1/messages", json=GOOD)
        assert r.status_code == 202
        b_msg = r.json()["id"]
        r = await _as(app, a, "POST", "/v1/messages", json={**GOOD, "subject": "mine"})
        a_msg = r.json()["id"]
        r = await _as(app, b, "POST", "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
        assert r.status_code == 201, r.text
        b_hook = r.json()["id"]

        # Tenant B reads its own objects: the ids exist.
        assert (await _as(app, b, "GET", f"/v1/messages/{b_msg}")).status_code == 200
        assert (await _as(app, b, "GET", f"/v1/webhooks/{b_hook}")).status_code == 200

        matrix = [
            ("GET", f"/v1/messages/{b_msg}", None),
            ("GET", f"/v1/messages/{b_msg}/raw", None),
            ("GET", f"/v1/webhooks/{b_hook}", None),
            ("PATCH", f"/v1/webhooks/{b_hook}", {"description": "taken"}),
            ("POST", f"/v1/webhooks/{b_hook}/replay", {"since_event_id": 1}),
            ("POST", f"/v1/webhooks/{b_hook}/rotate-secret", None),
            ("POST", f"/v1/webhooks/{b_hook}/test", None),
            ("GET", f"/v1/webhooks/{b_hook}/deliveries", None),
            ("DELETE", f"/v1/webhooks/{b_hook}", None),
            ("GET", f"/v1/keys/{b_id}", None),
            ("DELETE", f"/v1/keys/{b_id}", None),
        ]
        results = {}
        for method, path, body in matrix:
            r = await _as(app, a, method, path, json=body)
            results[(method, path)] = r.status_code
            assert r.headers["content-type"].startswith("application/problem+json"), path
        assert set(results.values()) == {404}, results

        # Lists hold only A's objects.
        listed = (await _as(app, a, "GET", "/v1/messages")).json()["data"]
        assert [m["id"] for m in listed] == [a_msg]
        assert (await _as(app, a, "GET", "/v1/webhooks")).json()["data"] == []
        assert [k["id"] for k in (await _as(app, a, "GET", "/v1/keys")).json()["data"]] == [a_id]

        # B's objects are untouched by A's attempts, and B's key still works.
        hook = (await _as(app, b, "GET", f"/v1/webhooks/{b_hook}")).json()
        assert hook["description"] != "taken"
        assert (await _as(app, b, "GET", f"/v1/messages/{b_msg}")).status_code == 200


async def test_scopes_revocation_and_expiry(database_url: str) -> None:
    async with live_app(settings_for(database_url), run_workers=False) as app:
        send_only, _ = await new_key(database_url, tenant="t", scopes=("messages:send",))
        r = await _as(app, send_only, "POST", "/v1/messages", json=GOOD)
        assert r.status_code == 202
        mid = r.json()["id"]
        for path in (f"/v1/messages/{mid}", "/v1/messages", f"/v1/messages/{mid}/raw"):
            r = await _as(app, send_only, "GET", path)
            assert r.status_code == 403, path
        for method, path in (("GET", "/v1/keys"), ("GET", "/v1/webhooks")):
            assert (await _as(app, send_only, method, path)).status_code == 403

        admin, _ = await new_key(database_url, tenant="t")
        victim, victim_id = await new_key(database_url, tenant="t")
        assert (await _as(app, victim, "GET", "/v1/messages")).status_code == 200
        assert (await _as(app, admin, "DELETE", f"/v1/keys/{victim_id}")).status_code == 204
        r = await _as(app, victim, "GET", "/v1/messages")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert (await _as(app, victim, "POST", "/v1/messages", json=GOOD)).status_code == 401
        # Revoking again is harmless and keeps it revoked.
        assert (await _as(app, admin, "DELETE", f"/v1/keys/{victim_id}")).status_code == 204
        listed = {k["id"]: k for k in (await _as(app, admin, "GET", "/v1/keys")).json()["data"]}
        assert listed[victim_id]["revoked_at"] is not None

        # Long enough to be used before it expires on a loaded machine; the wait ends
        # after the expiry, wherever it fell.
        short, _ = await new_key(database_url, tenant="t", expires_in=3.0)
        created_by = time.time()
        assert (await _as(app, short, "GET", "/v1/messages")).status_code == 200
        await asyncio.sleep(max(0.0, created_by + 3.0 - time.time()) + 0.2)
        assert (await _as(app, short, "GET", "/v1/messages")).status_code == 401

        assert (await _as(app, "kirim_unknown", "GET", "/v1/messages")).status_code == 401
        r = await app.client.get("/v1/messages", headers={"Authorization": "Basic abc"})
        assert r.status_code == 401


async def test_key_management_api(database_url: str) -> None:
    async with live_app(settings_for(database_url), run_workers=False) as app:
        manager, manager_id = await new_key(
            database_url, tenant="t", scopes=("messages:send", "messages:read", "keys:manage")
        )
        r = await _as(
            app, manager, "POST", "/v1/keys", json={"name": "sender", "scopes": ["messages:send"]}
        )
        assert r.status_code == 201, r.text
        created = r.json()
        new = created["key"]
        assert new.startswith("kirim_") and new.startswith(created["prefix"])
        assert created["scopes"] == ["messages:send"]
        assert (await _as(app, new, "POST", "/v1/messages", json=GOOD)).status_code == 202
        assert (await _as(app, new, "GET", "/v1/messages")).status_code == 403

        # Default scopes: the caller's, without keys:manage.
        r = await _as(app, manager, "POST", "/v1/keys", json={"name": "default"})
        assert r.json()["scopes"] == ["messages:read", "messages:send"]

        # A key cannot grant what it lacks, or unknown scopes, or a past expiry.
        r = await _as(
            app, manager, "POST", "/v1/keys", json={"name": "x", "scopes": ["webhooks:manage"]}
        )
        assert r.status_code == 403
        r = await _as(app, manager, "POST", "/v1/keys", json={"name": "x", "scopes": ["root"]})
        assert r.status_code == 422
        r = await _as(
            app, manager, "POST", "/v1/keys", json={"name": "x", "expires_at": "2001-01-01T00:00Z"}
        )
        assert r.status_code == 422
        r = await _as(
            app,
            manager,
            "POST",
            "/v1/keys",
            json={"name": "soon", "scopes": ["messages:read"], "expires_at": "2999-01-01T00:00Z"},
        )
        assert r.status_code == 201 and r.json()["expires_at"].startswith("2999-01-01")

        listed = (await _as(app, manager, "GET", "/v1/keys")).json()["data"]
        assert len(listed) == 4 and all("key" not in k and "key_hash" not in k for k in listed)
        assert created["id"] in {k["id"] for k in listed}
        one = (await _as(app, manager, "GET", f"/v1/keys/{manager_id}")).json()
        assert one["last_used_at"] is not None  # recorded by the requests above
        assert (await _as(app, manager, "GET", "/v1/keys/key_nope")).status_code == 404

        # The database holds hashes and prefixes only, never a full key.
    db = Database(database_url)
    try:
        async with db.read() as conn:
            rows = (await conn.execute(select(api_keys))).mappings().all()
    finally:
        await db.dispose()
    dump = repr([dict(r) for r in rows])
    assert new not in dump and manager not in dump
    assert await count(database_url, messages) == 1

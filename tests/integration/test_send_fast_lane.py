"""POST /v1/messages has two ways in: the fast lane (plain JSON that validates) and the
route (everything else). Both must answer alike, and a request the lane passes on must
get the route's answer, errors in the route's order.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.middleware.errors import ServerErrorMiddleware

from service.api.activity import ApiActivity
from service.api.fast_send import SendFastLane, _parse
from service.api.schemas import SendRequest
from service.db.engine import Database
from service.db.tables import messages
from tests.support.app import live_app, make_key, settings_for

pytestmark = pytest.mark.asyncio

BODY: dict[str, Any] = {
    "from": "Shop <shop@example.com>",
    "to": ["ann@example.com"],
    "subject": "s",
    "text": "t",
}
LANE = "application/json"
ROUTE = "application/vnd.kirim+json"  # JSON to the route, passed on by the lane


def _scope(content_type: bytes | None) -> dict[str, Any]:
    headers = [(b"content-type", content_type)] if content_type is not None else []
    return {"type": "http", "headers": headers}


def _message(body: bytes) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": False}


async def test_the_lane_takes_plain_json_and_passes_the_rest_on() -> None:
    raw = json.dumps(BODY).encode()
    assert isinstance(_parse(_scope(b"application/json"), _message(raw)), SendRequest)
    assert isinstance(
        _parse(_scope(b"Application/JSON; charset=utf-8"), _message(raw)), SendRequest
    )
    for content_type in (None, b"application/vnd.kirim+json", b"text/plain", b"application/jsonx"):
        assert _parse(_scope(content_type), _message(raw)) is None, content_type
    scope = _scope(b"application/json")
    assert _parse(scope, _message(b"")) is None
    assert _parse(scope, _message(b"{not json")) is None
    assert _parse(scope, _message(json.dumps({**BODY, "to": "one"}).encode())) is None
    assert _parse(scope, _message(json.dumps({**BODY, "unknown": 1}).encode())) is None
    assert _parse(scope, {**_message(raw), "more_body": True}) is None
    two = {"type": "http", "headers": [(b"content-type", b"application/json")] * 2}
    assert _parse(two, _message(raw)) is None


def _shape(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs between two accepts (ids, times)."""
    return {
        "status": answer["status"],
        "recipients": [(r["email"], r["status"]) for r in answer["recipients"]],
        "keys": sorted(answer),
    }


async def test_both_ways_answer_alike(database_url: str) -> None:
    async with live_app(settings_for(database_url), run_workers=False) as app:
        answers = {}
        for kind in (LANE, ROUTE):
            r = await app.client.post(
                "/v1/messages", content=json.dumps(BODY), headers={"Content-Type": kind}
            )
            assert r.status_code == 202, r.text
            assert r.headers["content-type"] == "application/json"
            answers[kind] = r.json()
            assert (await app.get(answers[kind]["id"]))["status"] == "queued"
        assert _shape(answers[LANE]) == _shape(answers[ROUTE])

        # An address the schema lets through but the checks refuse: the same 422 both ways.
        bad = {**BODY, "to": ["not-an-address"]}
        problems = []
        for kind in (LANE, ROUTE):
            r = await app.client.post(
                "/v1/messages", content=json.dumps(bad), headers={"Content-Type": kind}
            )
            assert r.status_code == 422
            assert r.headers["content-type"] == "application/problem+json"
            problems.append(r.json())
        assert problems[0] == problems[1]
        assert problems[0]["errors"][0]["field"] == "to.0"


async def test_idempotency_keys_are_shared_by_both_ways(database_url: str) -> None:
    async with live_app(settings_for(database_url), run_workers=False) as app:
        for first, second in ((LANE, ROUTE), (ROUTE, LANE)):
            headers = {"Idempotency-Key": f"k-{first}"}
            one = await app.client.post(
                "/v1/messages",
                content=json.dumps(BODY),
                headers={**headers, "Content-Type": first},
            )
            assert one.status_code == 202
            two = await app.client.post(
                "/v1/messages",
                content=json.dumps(BODY),
                headers={**headers, "Content-Type": second},
            )
            assert two.status_code == 202
            assert two.headers["idempotent-replayed"] == "true"
            assert two.json() == one.json()
            other = await app.client.post(
                "/v1/messages",
                content=json.dumps({**BODY, "subject": "changed"}),
                headers={**headers, "Content-Type": second},
            )
            assert other.status_code == 422
            assert other.json()["type"].endswith("/idempotency-key-reused")


async def test_authentication_comes_first_either_way(database_url: str) -> None:
    async with live_app(settings_for(database_url), run_workers=False) as app:
        reader = await make_key(database_url, tenant="t", scopes=("messages:read",))
        cases = [
            # (Authorization, body, status); "passed on": the lane leaves it to the route.
            ("Bearer kirim_unknown", BODY, 401),
            ("Bearer kirim_unknown", {**BODY, "to": "not-a-list"}, 401),  # passed on
            ("Basic abc", BODY, 401),
            (None, BODY, 401),
            (f"Bearer {reader}", BODY, 403),
            (f"Bearer {reader}", {"from": 1}, 403),  # passed on
            (f"Bearer {app.key}", {**BODY, "to": "not-a-list"}, 422),  # passed on
        ]
        # A client without the default key, so each case sends exactly its own header.
        async with httpx.AsyncClient(base_url=app.base_url, trust_env=False) as bare:
            for authorization, body, status in cases:
                headers = {"Content-Type": LANE}
                if authorization is not None:
                    headers["Authorization"] = authorization
                r = await bare.post("/v1/messages", content=json.dumps(body), headers=headers)
                assert r.status_code == status, (authorization, body, r.text)
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["instance"] == "/v1/messages"
                if status == 401:
                    assert r.headers["www-authenticate"] == "Bearer"


async def test_the_lane_sits_in_front_of_the_whole_stack(database_url: str) -> None:
    """In front of error handling and the body limits, so it must honour the limits itself:
    what they refuse it passes on, and the stack refuses it as before."""
    settings = settings_for(database_url, max_body_bytes=2048, max_json_depth=8)
    async with live_app(settings, run_workers=False) as app:
        stack = app.app.build_middleware_stack()
        assert isinstance(stack, SendFastLane)
        assert isinstance(stack.app, ServerErrorMiddleware)

        headers = {"Content-Type": LANE}
        fits = {**BODY, "text": "x" * 1500, "metadata": {"a": "b"}}
        r = await app.client.post("/v1/messages", content=json.dumps(fits), headers=headers)
        assert r.status_code == 202, r.text

        big = {**BODY, "text": "x" * 2100}
        r = await app.client.post("/v1/messages", content=json.dumps(big), headers=headers)
        assert r.status_code == 413
        assert r.json()["type"].endswith("/payload-too-large")

        deep: Any = "leaf"
        for _ in range(9):
            deep = {"k": deep}
        r = await app.client.post(
            "/v1/messages", content=json.dumps({**BODY, "metadata": deep}), headers=headers
        )
        assert r.status_code == 400
        assert r.json()["type"].endswith("/json-too-complex")


async def test_both_ways_keep_the_trace_context(database_url: str) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace_id}-00f067aa0ba902b7-01"
    async with live_app(settings_for(database_url), run_workers=False) as app:
        stored = []
        for kind in (LANE, ROUTE):
            r = await app.client.post(
                "/v1/messages",
                content=json.dumps(BODY),
                headers={"Content-Type": kind, "traceparent": parent},
            )
            assert r.status_code == 202, r.text
            untraced = await app.client.post(
                "/v1/messages", content=json.dumps(BODY), headers={"Content-Type": kind}
            )
            stored.append((await _traceparent(database_url, r.json()["id"]), kind))
            stored.append((await _traceparent(database_url, untraced.json()["id"]), kind))
    (lane, _), (lane_new, _), (route, _), (route_new, _) = stored
    for ours in (lane, route):
        # Our span of the caller's trace: its trace id and flags, a parent id of our own.
        version, trace, span, flags = ours.split("-")
        assert (version, trace, flags) == ("00", trace_id, "01") and span != "00f067aa0ba902b7"
    assert lane.split("-")[2] != route.split("-")[2]
    # Without a traceparent, a trace of its own each.
    fresh = {lane_new.split("-")[1], route_new.split("-")[1]}
    assert len(fresh) == 2 and trace_id not in fresh


async def test_the_lane_counts_as_api_activity(database_url: str) -> None:
    """With delivery in the API process while it is idle, a request through the lane must
    count as activity like any other."""
    async with live_app(settings_for(database_url), run_workers=False, idle_delivery=True) as app:
        activity: ApiActivity = app.app.front.keywords["activity"]
        assert activity is not None
        before = time.monotonic()
        r = await app.client.post(
            "/v1/messages", content=json.dumps(BODY), headers={"Content-Type": LANE}
        )
        assert r.status_code == 202
        assert activity.in_progress == 0 and activity.quiet_since >= before


async def _traceparent(database_url: str, message_id: str) -> str:
    db = Database(database_url)
    try:
        async with db.reader.connect() as conn:
            value = await conn.scalar(
                select(messages.c.traceparent).where(messages.c.id == message_id)
            )
    finally:
        await db.dispose()
    assert isinstance(value, str)
    return value

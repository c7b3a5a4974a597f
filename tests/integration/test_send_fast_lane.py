"""POST /v1/messages has two ways in: the fast lane (plain JSON that validates) and the
route (everything else). Both must answer alike, and a request the lane passes on must
get the route's answer, errors in the route's order.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from service.api.fast_send import _parse
from service.api.schemas import SendRequest
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

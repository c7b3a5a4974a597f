"""POST /v1/messages without the framework's per-request machinery.

The single send is the hot path, and FastAPI's routing, dependency solving and body
handling cost about as much CPU as accepting the message itself. This middleware answers
the requests it can with exactly the steps the route takes (the same JSON parser, the same
model validation, ``authenticate`` and ``accept_send``), and passes every other request on
untouched: a body that is not ``application/json`` or does not parse or validate goes to
the route, which answers it as before (its errors, in its order: authentication first).
Nothing has happened by the time a request is passed on, so the route's answer is the
whole answer. The route stays the documented contract (OpenAPI).

It sits inside ``BodyLimit``, so the body arrives whole, at most ``max_body_bytes`` of it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import idempotency
from service.api.deps import authenticate, guards_for
from service.api.errors import (
    ApiError,
    api_error_response,
    invalid_response,
    unavailable_response,
)
from service.api.routes.messages import accept_send
from service.api.schemas import SendRequest
from service.db.engine import DatabaseUnavailable
from service.domain.errors import InvalidRequest

PATH = "/v1/messages"
SCOPE = "messages:send"
_IDEMPOTENCY = idempotency.HEADER.lower().encode("latin-1")


class SendFastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        message = await receive()
        body = _parse(scope, message)
        if body is None:
            await self.app(scope, _replay(message, receive), send)
            return
        response = await _answer(scope, body)
        await response(scope, receive, send)


def _replay(first: Message, receive: Receive) -> Receive:
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return first
        return await receive()

    return again


def _parse(scope: Scope, message: Message) -> SendRequest | None:
    """The body as the route would see it, or None to leave the request to the route."""
    if message["type"] != "http.request" or message.get("more_body", False):
        return None
    raw = message.get("body", b"")
    if not raw or not _is_plain_json(scope):
        return None
    try:
        # What FastAPI does for a JSON body: Starlette's json.loads, then the model.
        return SendRequest.model_validate(json.loads(raw), from_attributes=True)
    except (ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError too
        return None


def _is_plain_json(scope: Scope) -> bool:
    """Exactly one Content-Type, ``application/json`` with or without parameters."""
    found: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            if found is not None:
                return False
            found = value
    if found is None:
        return False
    media = found.split(b";", 1)[0].strip().lower()
    return media == b"application/json"


async def _answer(scope: Scope, body: SendRequest) -> Response:
    authorization: str | None = None
    keys: list[str] = []
    for name, value in scope["headers"]:
        if name == b"authorization":
            if authorization is None:  # the first one, as Starlette's Headers.get
                authorization = value.decode("latin-1")
        elif name == _IDEMPOTENCY:
            keys.append(value.decode("latin-1"))
    app: Any = scope["app"]
    try:
        guard = guards_for(app)
        principal = await authenticate(guard, authorization or "", SCOPE)
        return await accept_send(guard, principal, body, keys, PATH)
    except ApiError as exc:
        return api_error_response(exc, PATH)
    except InvalidRequest as exc:
        return invalid_response(exc, PATH)
    except DatabaseUnavailable:
        return unavailable_response(PATH)

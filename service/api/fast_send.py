"""POST /v1/messages without the framework's per-request machinery.

The single send is the hot path, and FastAPI's routing, dependency solving, body handling
and the middleware layers around them cost about as much CPU as accepting the message
itself. This lane sits in front of the whole middleware stack (``KirimApp``) and answers
the requests it can with exactly the steps the route takes (the same JSON parser, the same
model validation, ``authenticate`` and ``accept_send``); every other request goes on
untouched: a body that is not ``application/json``, is larger than ``max_body_bytes``,
comes in several parts, nests too deep, or does not parse or validate goes to the stack,
whose layers and route answer it as before (their errors, in their order). Nothing has
happened by the time a request is passed on, so the stack's answer is the whole answer.
The route stays the documented contract (OpenAPI).

For the requests it answers, the lane does the part of the layers it skips: the body limit
and JSON depth checks (by passing on), the trace context and the API's activity count.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import idempotency
from service.api.activity import ApiActivity
from service.api.deps import authenticate, guards_for
from service.api.errors import (
    ApiError,
    api_error_response,
    invalid_response,
    unavailable_response,
)
from service.api.limits import json_too_complex
from service.api.routes.messages import accept_send
from service.api.schemas import SendRequest
from service.db.engine import DatabaseUnavailable
from service.domain.errors import InvalidRequest
from service.observability import tracing

PATH = "/v1/messages"
SCOPE = "messages:send"
_IDEMPOTENCY = idempotency.HEADER.lower().encode("latin-1")


class SendFastLane:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_json_depth: int,
        activity: ApiActivity | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.activity = activity

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
        body = self._parse(scope, message)
        if body is None:
            await self.app(scope, _replay(message, receive), send)
            return
        activity = self.activity
        if activity is not None:
            activity.started()
        token = tracing.enter_request(scope["headers"])
        try:
            response = await _answer(scope, body)
            await response(scope, receive, send)
        finally:
            tracing.leave_request(token)
            if activity is not None:
                activity.ended()

    def _parse(self, scope: Scope, message: Message) -> SendRequest | None:
        """The body as the route would see it, or None to leave the request to the stack
        (which also answers whatever the body limits refuse)."""
        raw = message.get("body", b"")
        if len(raw) > self.max_body_bytes or json_too_complex(raw, self.max_json_depth):
            return None
        return _parse(scope, message)


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

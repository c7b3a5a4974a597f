"""Request limits: body size and JSON nesting, checked before the application parses."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import problem
from service.domain.envelope import Limits
from service.settings import Settings

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_MAX_CONTAINERS = 100_000


def limits_from(settings: Settings) -> Limits:
    """The message limits the domain checks, from the settings."""
    return Limits(
        max_recipients=settings.max_recipients,
        max_attachment_bytes=settings.max_attachment_bytes,
        max_attachments=settings.max_attachments,
        max_headers=settings.max_headers,
    )


def json_too_complex(body: bytes, max_depth: int) -> str | None:
    """Why ``body`` must not reach the JSON parser (too deep or too many containers), or None.

    Python's parser recurses once per nesting level, so a 10,000-deep document would cost a
    RecursionError deep inside the framework; this scan works in C (split and translate) and
    then walks only the brackets, stopping at the first level past ``max_depth``.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return None
    # Dropping escaped backslashes, then escaped quotes, leaves strings without escapes; a
    # backslash outside a string is a syntax error at which the parser stops anyway.
    plain = body.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in body else body
    # Then every other piece between quotes is a string's content (and brackets after an
    # unterminated quote are inside a string to the parser too). A split, not a regex: a
    # batch of 500 messages holds thousands of strings.
    brackets = b"".join(plain.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    del plain
    if len(brackets) > 2 * _MAX_CONTAINERS:
        return f"more than {_MAX_CONTAINERS} arrays and objects"
    depth = 0
    for b in brackets:
        if b == 0x5B or b == 0x7B:  # [ {
            depth += 1
            if depth > max_depth:
                return f"nesting deeper than {max_depth} levels"
        else:
            depth -= 1
    return None


class BodyLimit:
    """413 when Content-Length, or the bytes actually streamed, exceed ``max_bytes``; 400
    when a JSON body nests deeper than ``max_json_depth``.

    The body is read here, at most ``max_bytes`` of it, and replayed to the application,
    so an oversized upload costs bounded memory whether or not it declares its length.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_json_depth: int = 32) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        del chunks
        if _is_json(scope):
            reason = json_too_complex(whole, self.max_json_depth)
            if reason is not None:
                response: Any = problem(
                    400, "json-too-complex", "The JSON body is too complex", f"It has {reason}."
                )
                await response(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response: Any = problem(
            413,
            "payload-too-large",
            "The request body is too large",
            f"The limit is {self.max_bytes} bytes.",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _is_json(scope: Scope) -> bool:
    # FastAPI parses a body without a content type as JSON too.
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return b"json" in value.lower()
    return True


class ConcurrencyCap:
    """At most ``limit`` POSTs to ``path`` are read and handled at once; the others wait.

    A batch of 500 messages takes several megabytes once parsed, validated and built into
    MIME, and 40 of them at once took `kirim serve` past 350 MB. Waiting requests are not
    read yet, so they cost only their socket buffers; throughput does not suffer, since the
    work is bound by the one core this process has.
    """

    def __init__(self, app: ASGIApp, path: str, limit: int) -> None:
        self.app = app
        self.path = path
        self._slots = asyncio.Semaphore(limit) if limit > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self._slots is None
            or scope["type"] != "http"
            or scope["path"] != self.path
            or scope["method"] != "POST"
        ):
            await self.app(scope, receive, send)
            return
        async with self._slots:
            await self.app(scope, receive, send)

"""Request bodies parsed with orjson, which builds the same objects as ``json.loads``.

A batch request of 500 messages is about a megabyte of JSON; Starlette's ``json.loads``
spent a tenth of the batch endpoint's CPU on it. Whatever orjson refuses (NaN, lone
surrogates, invalid JSON) goes to ``json.loads``, so every body gets the answer it got
before, errors included; so does a body with a run of 19 digits or more, since orjson turns
an integer beyond 64 bits into a float where ``json.loads`` keeps it exact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def loads(raw: bytes) -> Any:
    if _LONG_NUMBER.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


class _Request(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class FastJsonRoute(APIRoute):
    """A route whose JSON body is parsed by ``loads``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_fast_json(request: Request) -> Response:
            return await handler(_Request(request.scope, request.receive))

        return with_fast_json

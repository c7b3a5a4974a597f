"""Request dependencies: the runtime and the authenticated key."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from service.api.errors import ApiError
from service.api.runtime import Runtime
from service.db.keys import KeyRecord, find_key, touch_key

_TOUCH_EVERY = 60.0  # seconds; last_used_at need not cost a write per request


@dataclass(frozen=True, slots=True)
class Principal:
    key: KeyRecord

    @property
    def tenant_id(self) -> str:
        return self.key.tenant_id


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def _unauthorised(detail: str) -> ApiError:
    return ApiError(
        401, "unauthorized", "Authentication required", detail, {"WWW-Authenticate": "Bearer"}
    )


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that authenticates the bearer key and checks it carries ``scope``."""

    async def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        kind, _, key = header.partition(" ")
        if kind.lower() != "bearer" or not key.strip():
            raise _unauthorised("Send 'Authorization: Bearer <api key>'.")
        rt = runtime(request)
        record = await find_key(rt.db, key.strip())
        now = time.time()
        if record is None or not record.usable(now):
            raise _unauthorised("The API key is unknown, revoked or expired.")
        if scope not in record.scopes:
            raise ApiError(403, "forbidden", "Missing scope", f"This key lacks the {scope} scope.")
        if now - rt.key_touched.get(record.id, 0.0) > _TOUCH_EVERY:
            rt.key_touched[record.id] = now
            await touch_key(rt.db, record.id, now)
        return Principal(record)

    return dependency

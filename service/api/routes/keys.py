"""API keys of the caller's tenant: create (shown once), list, inspect, revoke."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from service.api.deps import Guards, Principal, guards, require, runtime
from service.api.errors import ApiError
from service.api.runtime import Runtime
from service.api.schemas import rfc3339
from service.db import keys as store
from service.domain.errors import FieldError
from service.domain.ids import is_id

router = APIRouter(prefix="/v1/keys", tags=["keys"])
_SCOPE = "keys:manage"
_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such key for this key's tenant", **_PROBLEM}
}


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="What the key is for.")
    scopes: list[str] | None = Field(
        default=None,
        max_length=len(store.ALL_SCOPES),
        description=(
            "Scopes of the new key, each one held by the calling key; default: the calling "
            "key's scopes without keys:manage."
        ),
    )
    expires_at: datetime | None = Field(
        default=None, description="RFC 3339 time after which the key stops working."
    )


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    scopes: list[str]
    created_at: str | None
    last_used_at: str | None = Field(description="Updated at most once a minute.")
    expires_at: str | None
    revoked_at: str | None


class KeyCreated(KeyOut):
    key: str = Field(description="The API key. Shown only in this response; store it now.")


class KeyList(BaseModel):
    data: list[KeyOut]


def _out(record: store.KeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": sorted(record.scopes),
        "created_at": rfc3339(record.created_at),
        "last_used_at": rfc3339(record.last_used_at),
        "expires_at": rfc3339(record.expires_at),
        "revoked_at": rfc3339(record.revoked_at),
    }


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(
        422,
        "validation-error",
        "The request is invalid",
        f"{field}: {message}",
        errors=[FieldError((field,), message)],
    )


@router.post(
    "",
    status_code=201,
    response_model=KeyCreated,
    summary="Create an API key for this tenant",
    description=(
        "The new key belongs to the calling key's tenant and can hold only scopes the calling "
        "key holds. The key itself is in this response only: Kirim stores a SHA-256 hash. "
        "Idempotency-Key is not honoured here, because replaying would mean storing the key; "
        "revoke a key created by a retry you did not want."
    ),
    responses={
        403: {"description": "A requested scope is not held by the calling key", **_PROBLEM},
        422: {"description": "Unknown scope or expiry in the past", **_PROBLEM},
    },
)
async def create_key(
    body: KeyCreate,
    principal: Principal = Depends(require(_SCOPE)),
    rt: Runtime = Depends(runtime),
) -> KeyCreated:
    now = time.time()
    held = principal.key.scopes
    wanted = set(body.scopes) if body.scopes is not None else set(held) - {_SCOPE}
    unknown = wanted - set(store.ALL_SCOPES)
    if unknown:
        raise _invalid("scopes", f"unknown scopes {sorted(unknown)}; known: {store.ALL_SCOPES}")
    if not wanted:
        raise _invalid("scopes", "a key needs at least one scope")
    beyond = wanted - held
    if beyond:
        raise ApiError(
            403,
            "forbidden",
            "Cannot grant a scope this key lacks",
            f"The calling key does not hold {sorted(beyond)}.",
        )
    expires_at = body.expires_at.timestamp() if body.expires_at is not None else None
    if expires_at is not None and expires_at <= now:
        raise _invalid("expires_at", "must be in the future")
    key, record = await store.create_key(
        rt.db,
        name=body.name,
        tenant_id=principal.tenant_id,
        scopes=tuple(sorted(wanted)),
        now=now,
        expires_at=expires_at,
    )
    return KeyCreated(key=key, **_out(record))


@router.get("", response_model=KeyList, summary="This tenant's keys (never the keys themselves)")
async def list_keys(
    principal: Principal = Depends(require(_SCOPE)),
    rt: Runtime = Depends(runtime),
) -> KeyList:
    records = await store.list_keys(rt.db, tenant_id=principal.tenant_id)
    return KeyList(data=[KeyOut(**_out(r)) for r in records])


async def _own_key(rt: Runtime, principal: Principal, key_id: str) -> store.KeyRecord:
    record = None
    if is_id(key_id, "key"):
        record = await store.get_key(rt.db, key_id, tenant_id=principal.tenant_id)
    if record is None:
        raise ApiError(404, "not-found", "No such key", f"No key {key_id!r}.")
    return record


@router.get("/{key_id}", response_model=KeyOut, summary="One key", responses=_NOT_FOUND)
async def get_key(
    key_id: str,
    principal: Principal = Depends(require(_SCOPE)),
    rt: Runtime = Depends(runtime),
) -> KeyOut:
    return KeyOut(**_out(await _own_key(rt, principal, key_id)))


@router.delete(
    "/{key_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke a key; it fails from the next request on",
    description=(
        "The key fails at once in the API process that answers; other API processes trust "
        "a key they looked up for `KIRIM_API_KEY_CACHE_SECONDS` (2 s by default), so there "
        "it fails within that time."
    ),
    responses=_NOT_FOUND,
)
async def revoke_key(
    key_id: str,
    principal: Principal = Depends(require(_SCOPE)),
    rt: Runtime = Depends(runtime),
    guard: Guards = Depends(guards),
) -> Response:
    await _own_key(rt, principal, key_id)
    await store.revoke_key(rt.db, key_id, tenant_id=principal.tenant_id, now=time.time())
    guard.keys.forget(key_id)
    return Response(status_code=204)

"""Webhook endpoints: register, manage, test, inspect deliveries, replay."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query
from starlette.responses import Response

from service.api.deps import Principal, require, runtime
from service.api.errors import ApiError
from service.api.runtime import Runtime
from service.api.schemas import rfc3339
from service.domain.errors import FieldError
from service.domain.ids import is_id
from service.webhooks import endpoints as store
from service.webhooks.events import EVENT_TYPES, unknown_types
from service.webhooks.schemas import (
    ReplayQueued,
    ReplayRequest,
    SecretRotated,
    TestQueued,
    WebhookAttemptOut,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookEvent,
    WebhookList,
    WebhookOut,
    WebhookUpdate,
)
from service.webhooks.ssrf import UnsafeUrl, check_url, parse_networks

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
_SCOPE = "webhooks:manage"
_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such endpoint for this key's tenant", **_PROBLEM}
}
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"description": "A field is invalid (the url names the SSRF reason)", **_PROBLEM}
}


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(
        422,
        "validation-error",
        "The request is invalid",
        f"{field}: {message}",
        errors=[FieldError((field,), message)],
    )


async def _checked_url(url: str, rt: Runtime) -> str:
    # Resolved and checked, never connected to: the dispatcher checks again at each send.
    try:
        await check_url(url, parse_networks(rt.settings.webhook_allowed_networks))
    except UnsafeUrl as exc:
        raise _invalid("url", exc.reason) from exc
    return url


def _checked_types(types: list[str]) -> list[str]:
    unknown = unknown_types(types)
    if unknown:
        raise _invalid("events", f"unknown event types {unknown}; known: {sorted(EVENT_TYPES)}")
    return sorted(set(types))


def _out(row: dict[str, Any]) -> WebhookOut:
    return WebhookOut(
        id=row["id"],
        url=row["url"],
        description=row["description"],
        events=list(row["events"] or []),
        enabled=bool(row["enabled"]),
        disabled_reason=row["disabled_reason"],
        created_at=rfc3339(row["created_at"]),
        updated_at=rfc3339(row["updated_at"]),
        failing_since=rfc3339(row["failing_since"]),
    )


async def _endpoint(rt: Runtime, principal: Principal, endpoint_id: str) -> dict[str, Any]:
    row = None
    if is_id(endpoint_id, "whk"):
        row = await store.get(rt.db, tenant_id=principal.tenant_id, endpoint_id=endpoint_id)
    if row is None:
        raise ApiError(
            404, "not-found", "No such webhook endpoint", f"No endpoint {endpoint_id!r}."
        )
    return row


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    summary="Register an endpoint; the signing secret is shown once",
    responses=_INVALID,
)
async def create_webhook(
    body: WebhookCreate,
    principal: Principal = Depends(require(_SCOPE)),
    rt: Runtime = Depends(runtime),
) -> WebhookCreated:
    types = _checked_types(body.events)
    url = await _checked_url(body.url, rt)
    row, secret = await store.create(
        rt.db,
        tenant_id=principal.tenant_id,
        url=url,
        types=types,
        description=body.description,
        now=time.time(),
    )
    return WebhookCreated(**_out(row).model_dump(), secret=secret)


@router.get("", response_model=WebhookList, summary="This tenant's endpoints")
async def list_webhooks(
    principal: Principal = Depends(require(_SCOPE)), rt: Runtime = Depends(runtime)
) -> WebhookList:
    rows = await store.list_all(rt.db, tenant_id=principal.tenant_id)
    return WebhookList(data=[_out(r) for r in rows])


@router.get("/{endpoint_id}", response_model=WebhookOut, responses=_NOT_FOUND)
async def get_webhook(
    endpoint_id: str,
    principal: Principal = Depends(require(_SCOPE)),
    rt: Runtime = Depends(runtime),
) -> WebhookOut:
    return _out(await _endpoint(rt, principal, endpoint_id))


@router.patch(
    "/{endpoint_id}",
    response_model=WebhookOut,
    summary="Change url, events, description or enabled",
    responses={**_NOT_FOUND, **_INVALID},
)
async def update_webhook(
    endpoint_id: str,
    body: WebhookUpdate,
    principal: Principal = Depends(require(_SCOPE)),
    rt: Runtime = Depends(runtime),
) -> WebhookOut:
    await _endpoint(rt, principal, endpoint_id)
    changes = body.model_dump(exclude_none=True)
    if "events" in changes:
        changes["events"] = _checked_types(changes["events"])
    if "url" in changes:
        changes["url"] = await _checked_url(changes["url"], rt)
    row = await store.update_endpoint(
        rt.db,
        tenant_id=principal.tenant_id,
        endpoint_id=endpoint_id,
        changes=changes,
        now=time.time(),
    )
    if row is None:
        raise ApiError(
            404, "not-found", "No such webhook endpoint", f"No endpoint {endpoint_id!r}."
        )
    return _out(row)


@router.delete("/{endpoint_id}", status_code=204, response_class=Response, responses=_NOT_FOUND)
async def delete_webhook(
    endpoint_id: str,
    principal: Principal = Depends(require(_SCOPE)),
    rt: Runtime = Depends(runtime),
) -> Response:
    await _endpoint(rt, principal, endpoint_id)
    await store.remove(rt.db, tenant_id=principal.tenant_id, endpoint_id=endpoint_id)
    return Response(status_code=204)


@router.post(
    "/{endpoint_id}/rotate-secret",
    response_model=SecretRotated,
    summary="New signing secret; the old one keeps signing for the grace period",
    responses=_NOT_FOUND,
)
async def rotate_secret(
    endpoint_id: str,
    principal: Principal = Depends(require(_SCOPE)),
    rt: Runtime = Depends(runtime),
) -> SecretRotated:
    await _endpoint(rt, principal, endpoint_id)
    rotated = await store.rotate_secret(
        rt.db,
        tenant_id=principal.tenant_id,
        endpoint_id=endpoint_id,
        now=time.time(),
        grace=rt.settings.webhook_secret_grace,
    )
    if rotated is None:
        raise ApiError(
            404, "not-found", "No such webhook endpoint", f"No endpoint {endpoint_id!r}."
        )
    secret, old_until = rotated
    return SecretRotated(secret=secret, previous_secrets_expire_at=rfc3339(old_until))


def _require_enabled(row: dict[str, Any]) -> None:
    if not row["enabled"]:
        raise ApiError(
            409,
            "endpoint-disabled",
            "The endpoint is disabled",
            f"Disabled: {row['disabled_reason']}. PATCH enabled=true first.",
        )


@router.post(
    "/{endpoint_id}/test",
    status_code=202,
    response_model=TestQueued,
    summary="Queue a webhook.test event to this endpoint",
    responses=_NOT_FOUND,
)
async def test_webhook(
    endpoint_id: str,
    principal: Principal = Depends(require(_SCOPE)),
    rt: Runtime = Depends(runtime),
) -> TestQueued:
    _require_enabled(await _endpoint(rt, principal, endpoint_id))
    row = await store.send_test(
        rt.db, endpoint_id=endpoint_id, tenant_id=principal.tenant_id, now=time.time()
    )
    return TestQueued(delivery_id=row["id"], webhook_id=row["webhook_id"])


@router.get(
    "/{endpoint_id}/deliveries",
    response_model=WebhookDeliveryList,
    summary="Deliveries to this endpoint, newest first, with every attempt",
    responses=_NOT_FOUND,
)
async def list_deliveries(
    endpoint_id: str,
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
    limit: int = Query(default=50, ge=1, le=200),
    principal: Principal = Depends(require(_SCOPE)),
    rt: Runtime = Depends(runtime),
) -> WebhookDeliveryList:
    await _endpoint(rt, principal, endpoint_id)
    if cursor is not None and not is_id(cursor, "whd"):
        raise ApiError(400, "bad-cursor", "Invalid cursor", "Use next_cursor from a previous page.")
    rows = await store.deliveries(rt.db, endpoint_id=endpoint_id, limit=limit, before=cursor)
    data = [_delivery(r) for r in rows]
    return WebhookDeliveryList(data=data, next_cursor=data[-1].id if len(data) == limit else None)


def _delivery(r: dict[str, Any]) -> WebhookDeliveryOut:
    latency = r["last_latency"]
    return WebhookDeliveryOut(
        id=r["id"],
        event_id=r["event_id"],
        event_type=r["event_type"],
        webhook_id=r["webhook_id"],
        status=r["status"],
        attempts=r["attempts"],
        next_attempt_at=rfc3339(r["next_attempt_at"]) if r["status"] == "pending" else None,
        last_status_code=r["last_status_code"],
        last_error=r["last_error"],
        last_latency_ms=None if latency is None else round(latency * 1000, 3),
        created_at=rfc3339(r["created_at"]),
        attempt_log=[
            WebhookAttemptOut(
                number=a["number"],
                at=rfc3339(a["at"]),
                status_code=a["status_code"],
                latency_ms=round(a["latency"] * 1000, 3),
                error=a["error"],
                response=a["response"],
            )
            for a in r["attempt_log"]
        ],
    )


@router.post(
    "/{endpoint_id}/replay",
    status_code=202,
    response_model=ReplayQueued,
    summary="Re-send every matching event since a time or an event id",
    responses={**_NOT_FOUND, **_INVALID},
)
async def replay(
    endpoint_id: str,
    body: ReplayRequest = Body(...),
    principal: Principal = Depends(require(_SCOPE)),
    rt: Runtime = Depends(runtime),
) -> ReplayQueued:
    row = await _endpoint(rt, principal, endpoint_id)
    if (body.since is None) == (body.since_event_id is None):
        raise _invalid("since", "give exactly one of since (RFC 3339) or since_event_id")
    if body.since is not None and body.since.tzinfo is None:
        raise _invalid("since", "include a time zone offset, e.g. 2026-01-31T12:00:00Z")
    _require_enabled(row)
    count = await store.replay(
        rt.db,
        tenant_id=principal.tenant_id,
        endpoint_id=endpoint_id,
        types=list(row["events"] or []),
        since=body.since.timestamp() if body.since is not None else None,
        since_event_id=body.since_event_id,
        now=time.time(),
    )
    return ReplayQueued(count=count)


def document_events(app: FastAPI) -> None:
    """Describe every event type in the OpenAPI ``webhooks`` section."""
    for name, description in EVENT_TYPES.items():

        async def _event(body: WebhookEvent) -> None:  # documentation only
            return None

        app.webhooks.post(
            name,
            summary=name,
            description=description
            + "\n\nHeaders: webhook-id (stable across retries; dedupe on it), "
            "webhook-timestamp (Unix seconds of this attempt), webhook-signature "
            "(space-separated `v1,<base64 HMAC-SHA256 of id.timestamp.body>`, one per "
            "active secret). Answer 2xx within the timeout; 410 disables the endpoint.",
            operation_id=f"webhook_{name.replace('.', '_')}",
        )(_event)

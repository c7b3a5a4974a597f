"""Operator API (scope ``admin``): queue stats, bulk retry/cancel/bounce, delivery pauses.

An admin key acts on every tenant; ``tenant`` in a filter narrows it to one.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from service.admin import actions, pauses
from service.api.deps import Principal, require, runtime
from service.api.errors import ApiError
from service.api.runtime import Runtime

router = APIRouter(prefix="/v1/admin", tags=["admin"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key", **_PROBLEM},
    403: {"description": "The key lacks the admin scope", **_PROBLEM},
    422: {"description": "The filter is invalid", **_PROBLEM},
}


class RecipientFilter(BaseModel):
    status: list[Literal["scheduled", "queued", "deferred"]] = Field(
        default_factory=list,
        description="States to select; default deferred for retry, every waiting state otherwise.",
    )
    domain: str | None = Field(default=None, description="Recipient domain, e.g. example.com.")
    tenant: str | None = Field(default=None, max_length=64, description="Only this tenant.")
    older_than: float | None = Field(
        default=None, ge=0, description="Only recipients accepted at least this many seconds ago."
    )
    limit: int | None = Field(default=None, ge=1, description="Change at most this many.")
    dry_run: bool = Field(default=False, description="Only count what would change.")


class ActionResult(BaseModel):
    action: str
    matched: int = Field(description="Recipients the filter selects now.")
    changed: int = Field(description="Recipients changed (0 on a dry run).")
    dry_run: bool


class PauseIn(BaseModel):
    kind: Literal["tenant", "domain"]
    value: str = Field(min_length=1, max_length=255)
    reason: str = Field(default="", max_length=500)


class PauseOut(BaseModel):
    kind: str
    value: str
    reason: str
    created_at: float


async def _act(
    action: actions.Action, body: RecipientFilter, rt: Runtime, request: Request
) -> ActionResult:
    sel = actions.Selection(
        tuple(body.status), body.domain, body.tenant, body.older_than, body.limit
    )
    try:
        res = await actions.apply(rt.db, action, sel, now=time.time(), dry_run=body.dry_run)
    except ValueError as exc:
        raise ApiError(422, "invalid-filter", "Invalid filter", str(exc)) from exc
    worker = getattr(request.app.state, "worker", None)
    if res.changed and worker is not None:
        worker.wake()
    return ActionResult(
        action=res.action, matched=res.matched, changed=res.changed, dry_run=res.dry_run
    )


@router.get("/stats", summary="Recipients by state, the due queue, busiest domains, pauses")
async def get_stats(
    tenant: str | None = Query(default=None, max_length=64),
    _: Principal = Depends(require("admin")),
    rt: Runtime = Depends(runtime),
) -> dict[str, Any]:
    return await actions.stats(rt.db, now=time.time(), tenant=tenant)


@router.post(
    "/recipients/retry",
    response_model=ActionResult,
    summary="Make waiting recipients due now (dry_run counts them)",
    responses=_ERRORS,
)
async def retry(
    body: RecipientFilter,
    request: Request,
    _: Principal = Depends(require("admin")),
    rt: Runtime = Depends(runtime),
) -> ActionResult:
    return await _act("retry", body, rt, request)


@router.post(
    "/recipients/cancel",
    response_model=ActionResult,
    summary="Cancel waiting recipients; writes message.cancelled events",
    responses=_ERRORS,
)
async def cancel(
    body: RecipientFilter,
    request: Request,
    _: Principal = Depends(require("admin")),
    rt: Runtime = Depends(runtime),
) -> ActionResult:
    return await _act("cancel", body, rt, request)


@router.post(
    "/recipients/bounce",
    response_model=ActionResult,
    summary="Bounce waiting recipients; writes message.bounced events",
    responses=_ERRORS,
)
async def bounce(
    body: RecipientFilter,
    request: Request,
    _: Principal = Depends(require("admin")),
    rt: Runtime = Depends(runtime),
) -> ActionResult:
    return await _act("bounce", body, rt, request)


@router.get("/pauses", response_model=list[PauseOut], summary="Active delivery pauses")
async def get_pauses(
    _: Principal = Depends(require("admin")), rt: Runtime = Depends(runtime)
) -> list[PauseOut]:
    return [
        PauseOut(kind=p.kind, value=p.value, reason=p.reason, created_at=p.created_at)
        for p in await pauses.list_pauses(rt.db)
    ]


@router.post(
    "/pauses",
    status_code=201,
    response_model=PauseOut,
    summary="Pause delivery to a tenant or domain (200 if already paused)",
    responses=_ERRORS,
)
async def add_pause(
    body: PauseIn,
    response: Response,
    _: Principal = Depends(require("admin")),
    rt: Runtime = Depends(runtime),
) -> PauseOut:
    now = time.time()
    try:
        created = await pauses.pause(rt.db, body.kind, body.value, reason=body.reason, now=now)
    except ValueError as exc:
        raise ApiError(422, "invalid-pause", "Invalid pause", str(exc)) from exc
    if not created:
        response.status_code = 200
    value = pauses.normalise(body.kind, body.value)
    current = [
        p for p in await pauses.list_pauses(rt.db) if (p.kind, p.value) == (body.kind, value)
    ]
    p = current[0] if current else pauses.Pause(body.kind, value, body.reason, now)
    return PauseOut(kind=p.kind, value=p.value, reason=p.reason, created_at=p.created_at)


@router.delete(
    "/pauses/{kind}/{value}",
    status_code=204,
    summary="Resume delivery to a tenant or domain",
    responses={404: {"description": "Not paused", **_PROBLEM}, **_ERRORS},
)
async def remove_pause(
    kind: Literal["tenant", "domain"],
    value: str,
    request: Request,
    _: Principal = Depends(require("admin")),
    rt: Runtime = Depends(runtime),
) -> Response:
    try:
        removed = await pauses.resume(rt.db, kind, value)
    except ValueError as exc:
        raise ApiError(422, "invalid-pause", "Invalid pause", str(exc)) from exc
    if not removed:
        raise ApiError(404, "not-found", "Not paused", f"No pause for {kind} {value!r}.")
    worker = getattr(request.app.state, "worker", None)
    if worker is not None:
        worker.wake()
    return Response(status_code=204)

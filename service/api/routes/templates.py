"""Stored templates: /v1/templates."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from service.api.deps import Principal, require, runtime
from service.api.errors import ApiError
from service.api.runtime import Runtime
from service.api.schemas import rfc3339
from service.api.sending_schemas import TemplateIn, TemplateList, TemplateOut
from service.db import templates as store
from service.domain.errors import InvalidRequest
from service.domain.ids import is_id
from service.domain.templates import TemplateSource, check_source, variables_used

router = APIRouter(prefix="/v1/templates", tags=["templates"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_MISSING: dict[int | str, dict[str, Any]] = {404: {"description": "No such template", **_PROBLEM}}
_TAKEN: dict[int | str, dict[str, Any]] = {
    409: {"description": "The tenant has a template of this name", **_PROBLEM}
}


def _out(row: dict[str, Any]) -> TemplateOut:
    src = TemplateSource(row["subject"], row["text"], row["html"])
    return TemplateOut(
        id=row["id"],
        name=row["name"],
        subject=row["subject"],
        text=row["text"],
        html=row["html"],
        variables=sorted(variables_used(src)),
        created_at=rfc3339(row["created_at"]),
        updated_at=rfc3339(row["updated_at"]),
    )


def _checked(body: TemplateIn) -> dict[str, str | None]:
    errors = check_source(TemplateSource(body.subject, body.text, body.html))
    if errors:
        raise InvalidRequest(errors)
    return {"subject": body.subject, "text": body.text, "html": body.html}


def _not_found(ref: str) -> ApiError:
    return ApiError(404, "not-found", "No such template", f"No template {ref!r}.")


def _taken(name: str) -> ApiError:
    return ApiError(409, "conflict", "Name taken", f"A template named {name!r} exists.")


@router.post(
    "",
    status_code=201,
    response_model=TemplateOut,
    summary="Store a template",
    description=(
        "Subject, text and html are Jinja2 sources, rendered in a sandbox when a message "
        "names the template; html autoescapes variables. Syntax errors are 422 here."
    ),
    responses={**_TAKEN, 422: {"description": "A field is invalid", **_PROBLEM}},
)
async def create_template(
    body: TemplateIn,
    principal: Principal = Depends(require("messages:send")),
    rt: Runtime = Depends(runtime),
) -> TemplateOut:
    parts = _checked(body)
    if is_id(body.name, "tpl"):
        raise ApiError(422, "validation-error", "Invalid name", "Names cannot look like ids.")
    try:
        row = await store.create(
            rt.db, tenant_id=principal.tenant_id, name=body.name, parts=parts, now=time.time()
        )
    except store.NameTaken:
        raise _taken(body.name) from None
    return _out(row)


@router.get("", response_model=TemplateList, summary="The tenant's templates, oldest first")
async def list_templates(
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
    limit: int = Query(default=50, ge=1, le=200),
    principal: Principal = Depends(require("messages:read")),
    rt: Runtime = Depends(runtime),
) -> TemplateList:
    if cursor is not None and not is_id(cursor, "tpl"):
        raise ApiError(400, "bad-cursor", "Invalid cursor", "Use next_cursor from a previous page.")
    rows = await store.list_page(rt.db, tenant_id=principal.tenant_id, limit=limit, after=cursor)
    return TemplateList(
        data=[_out(r) for r in rows], next_cursor=rows[-1]["id"] if len(rows) == limit else None
    )


@router.get(
    "/{ref}", response_model=TemplateOut, summary="One template, by id or name", responses=_MISSING
)
async def get_template(
    ref: str,
    principal: Principal = Depends(require("messages:read")),
    rt: Runtime = Depends(runtime),
) -> TemplateOut:
    row = await store.get(rt.db, tenant_id=principal.tenant_id, ref=ref)
    if row is None:
        raise _not_found(ref)
    return _out(row)


@router.put(
    "/{ref}",
    response_model=TemplateOut,
    summary="Replace a template",
    description="Messages already accepted keep the bytes they were rendered to.",
    responses={**_MISSING, **_TAKEN},
)
async def replace_template(
    ref: str,
    body: TemplateIn,
    principal: Principal = Depends(require("messages:send")),
    rt: Runtime = Depends(runtime),
) -> TemplateOut:
    parts = _checked(body)
    try:
        row = await store.replace(
            rt.db,
            tenant_id=principal.tenant_id,
            ref=ref,
            name=body.name,
            parts=parts,
            now=time.time(),
        )
    except store.NameTaken:
        raise _taken(body.name) from None
    if row is None:
        raise _not_found(ref)
    return _out(row)


@router.delete("/{ref}", status_code=204, summary="Delete a template", responses=_MISSING)
async def delete_template(
    ref: str,
    principal: Principal = Depends(require("messages:send")),
    rt: Runtime = Depends(runtime),
) -> Response:
    if not await store.remove(rt.db, tenant_id=principal.tenant_id, ref=ref):
        raise _not_found(ref)
    return Response(status_code=204)

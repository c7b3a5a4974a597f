"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from service.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive (no I/O).")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Ready to accept mail: the database answers and its schema is current.",
    responses={503: {"model": Health}},
)
async def readyz(request: Request) -> Health | JSONResponse:
    # Cached briefly; also fails while the schema is behind this code's migrations.
    state = await request.app.state.operations.readiness.get()
    if not state.ready:
        body = {"status": "unavailable", "database": state.database, "schema": state.schema}
        return JSONResponse({**body, "expected_schema": state.expected}, status_code=503)
    return Health(status="ok", database="ok")

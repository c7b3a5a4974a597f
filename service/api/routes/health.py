"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import text
from starlette.responses import JSONResponse

from service.api.deps import runtime
from service.api.runtime import Runtime
from service.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive (no I/O).")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Ready to accept mail: the database answers a round trip.",
    responses={503: {"model": Health}},
)
async def readyz(rt: Runtime = Depends(runtime)) -> Health | JSONResponse:
    try:
        async with rt.db.read() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "database": type(exc).__name__}, status_code=503
        )
    return Health(status="ok", database="ok")

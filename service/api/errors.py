"""Problem details (RFC 9457) for every error the API returns."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from service.db.engine import DatabaseUnavailable
from service.domain.errors import FieldError, InvalidRequest

PROBLEM = "application/problem+json"
_BASE = "https://kirim.dev/problems/"


class ApiError(Exception):
    """An error a route wants the client to see, with a stable type."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors or []


def problem(
    status: int,
    kind: str,
    title: str,
    detail: str | None = None,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
) -> Response:
    body: dict[str, Any] = {"type": _BASE + kind, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = [{"field": e.field, "loc": list(e.loc), "message": e.msg} for e in errors]
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _loc(raw: tuple[Any, ...]) -> tuple[str | int, ...]:
    parts = [p for p in raw if p not in ("body",)]
    return tuple(p if isinstance(p, int | str) else str(p) for p in parts)


def api_error_response(exc: ApiError, path: str) -> Response:
    return problem(
        exc.status,
        exc.kind,
        exc.title,
        exc.detail,
        errors=exc.errors,
        headers=exc.headers,
        instance=path,
    )


def invalid_response(exc: InvalidRequest, path: str) -> Response:
    return problem(
        422,
        "validation-error",
        "The request is invalid",
        "; ".join(f"{e.field}: {e.msg}" for e in exc.errors),
        errors=exc.errors,
        instance=path,
    )


def unavailable_response(path: str) -> Response:
    return problem(
        503,
        "unavailable",
        "The database is unavailable; nothing was stored",
        "Retry the request shortly.",
        headers={"Retry-After": "2"},
        instance=path,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return api_error_response(exc, request.url.path)

    @app.exception_handler(InvalidRequest)
    async def _invalid(request: Request, exc: InvalidRequest) -> Response:
        return invalid_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _schema(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            FieldError(_loc(tuple(e.get("loc", ()))), str(e.get("msg", ""))) for e in exc.errors()
        ]
        errors = [e if e.loc else FieldError(("body",), e.msg) for e in errors]
        json_problem = any(e.get("type") == "json_invalid" for e in exc.errors())
        return problem(
            400 if json_problem else 422,
            "malformed-json" if json_problem else "validation-error",
            "The body is not valid JSON" if json_problem else "The request is invalid",
            "; ".join(f"{e.field}: {e.msg}" for e in errors),
            errors=errors,
            instance=request.url.path,
        )

    @app.exception_handler(DatabaseUnavailable)
    async def _db_down(request: Request, exc: DatabaseUnavailable) -> Response:
        return unavailable_response(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem(
            exc.status_code,
            kind,
            str(exc.detail) if exc.detail else "Error",
            headers=getattr(exc, "headers", None),
            instance=request.url.path,
        )

"""Errors as JSON with a stable code and a human message; invalid input is a 4xx naming the field.

{"error": {"code": "invalid_input", "message": "...", "hint": "...",
           "fields": [{"field": ..., "message": ...}]}}
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cau.errors import (
    CauError,
    ConfigError,
    LockHeld,
    NameTaken,
    NotFound,
    PreflightError,
    ProfileError,
    ProviderError,
)
from cau.redact import redact


class ApiError(Exception):
    """An error a route raises on purpose: HTTP status, stable code, message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint
        self.fields = fields or []
        self.headers = headers or {}


def body(
    code: str, message: str, hint: str | None = None, fields: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    # Error texts often quote what went wrong (a command, a URL): mask any secret they hold.
    error: dict[str, Any] = {"code": code, "message": redact(message)}
    if hint:
        error["hint"] = redact(hint)
    if fields:
        error["fields"] = [{k: redact(v) for k, v in f.items()} for f in fields]
    return {"error": error}


def from_cau_error(exc: CauError) -> ApiError:
    """The HTTP face of the service layer's exceptions (the CLI maps the same classes to exit codes)."""
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", exc.message, hint=exc.hint)
    if isinstance(exc, NameTaken):
        return ApiError(409, "name_taken", exc.message, hint=exc.hint)
    if isinstance(exc, LockHeld):
        return ApiError(409, "cluster_locked", exc.message, hint=exc.hint)
    if isinstance(exc, PreflightError):
        return ApiError(409, "preflight_refused", exc.message, hint=exc.hint)
    if isinstance(exc, ConfigError):
        return ApiError(400, "invalid_config", exc.message, hint=exc.hint)
    if isinstance(exc, ProviderError):
        return ApiError(502, "provider_error", exc.message, hint=exc.hint)
    return ApiError(400, "error", exc.message, hint=exc.hint)


def from_profile_error(exc: ProfileError) -> ApiError:
    fields = []
    for line in exc.problems:
        key, sep, message = line.partition(": ")
        fields.append({"field": key if sep else "profile", "message": message if sep else line})
    return ApiError(422, "invalid_profile", f"invalid run profile: {'; '.join(exc.problems)}", fields=fields)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
}


def response(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    headers.update(exc.headers)
    return JSONResponse(body(exc.code, exc.message, exc.hint, exc.fields), exc.status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return response(exc)

    @app.exception_handler(CauError)
    async def _cau_error(request: Request, exc: CauError) -> JSONResponse:
        return await _api_error(request, from_cau_error(exc))

    @app.exception_handler(ProfileError)
    async def _profile_error(request: Request, exc: ProfileError) -> JSONResponse:
        return await _api_error(request, from_profile_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"field": _field(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in exc.errors()]
        names = ", ".join(f["field"] for f in fields)
        return JSONResponse(body("invalid_input", f"invalid input: {names}", fields=fields), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse(body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

"""The one place that maps domain errors to HTTP statuses and OpenAI's error envelope (gateway and engine)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from llamafleet.core.errors import (
    ContextLengthExceeded,
    EngineFailed,
    Forbidden,
    InvalidRequest,
    LlamafleetError,
    ModelFileInvalid,
    NoCapacity,
    NotFound,
    Overloaded,
    QuotaExceeded,
    Unauthorized,
    Unavailable,
    error_body,
    validation_param,
)

log = logging.getLogger(__name__)


# domain error → (HTTP status, OpenAI error type)
_STATUS: list[tuple[type[LlamafleetError], int, str]] = [
    (InvalidRequest, 400, "invalid_request_error"),
    (Unauthorized, 401, "authentication_error"),
    (Forbidden, 403, "permission_error"),
    (QuotaExceeded, 429, "rate_limit_error"),
    (NotFound, 404, "invalid_request_error"),
    (ModelFileInvalid, 422, "invalid_request_error"),
    (Overloaded, 429, "rate_limit_error"),
    (NoCapacity, 503, "server_error"),
    (Unavailable, 503, "server_error"),
    (EngineFailed, 502, "server_error"),
]


def status_of(exc: LlamafleetError) -> tuple[int, str]:
    for kind, status, type_ in _STATUS:
        if isinstance(exc, kind):
            return status, type_
    return 500, "server_error"


# Anthropic's error types by status, for answers on its Messages API route.
ANTHROPIC_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 422: "invalid_request_error",
                    429: "rate_limit_error", 503: "overloaded_error"}  # fmt: skip


def error_response(exc: LlamafleetError, path: str = "") -> JSONResponse:
    """OpenAI's error envelope, or Anthropic's on its Messages API route (what its clients read)."""
    status, type_ = status_of(exc)
    headers = {}
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if path in ANTHROPIC_PATHS:
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        return JSONResponse(
            {"type": "error", "error": {"type": kind, "message": exc.message}}, status, headers
        )
    param = exc.param if isinstance(exc, InvalidRequest) else None
    body = error_body(exc.message, type_, exc.code, param)
    if isinstance(exc, ContextLengthExceeded):  # as llama-server: the numbers, machine-readable
        body["error"] |= {"n_prompt_tokens": exc.n_prompt_tokens, "n_ctx": exc.n_ctx}
    return JSONResponse(body, status, headers=headers)


def install(app: FastAPI, component: str) -> None:
    @app.exception_handler(LlamafleetError)
    async def on_domain(request: Request, exc: LlamafleetError) -> JSONResponse:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        path = request.url.path
        if first["type"] == "json_invalid":
            return error_response(InvalidRequest("request body is not valid JSON", "body"), path)
        param = validation_param(tuple(first["loc"]))
        message = first["msg"]
        return error_response(InvalidRequest(f"{param}: {message}", param), path)

    @app.exception_handler(HTTPException)
    async def on_http(_: Request, exc: HTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "http_error"
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", code), exc.status_code)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(f"internal error; see the {component}'s logs", "server_error", "internal_error"), 500
        )

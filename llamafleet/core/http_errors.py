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
)
from llamafleet.core.openai_api import error_body, validation_param

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


def error_response(exc: LlamafleetError) -> JSONResponse:
    status, type_ = status_of(exc)
    headers = {}
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    param = exc.param if isinstance(exc, InvalidRequest) else None
    body = error_body(exc.message, type_, exc.code, param)
    if isinstance(exc, ContextLengthExceeded):  # as llama-server: the numbers, machine-readable
        body["error"] |= {"n_prompt_tokens": exc.n_prompt_tokens, "n_ctx": exc.n_ctx}
    return JSONResponse(body, status, headers=headers)


def install(app: FastAPI, component: str) -> None:
    @app.exception_handler(LlamafleetError)
    async def on_domain(_: Request, exc: LlamafleetError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            return error_response(InvalidRequest("request body is not valid JSON", "body"))
        param = validation_param(tuple(first["loc"]))
        message = first["msg"]
        return error_response(InvalidRequest(f"{param}: {message}", param))

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

"""The engine's HTTP surface for one model replica: /health, /metrics, OpenAI-style completions."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llamafleet.core.errors import InvalidRequest, LlamafleetError, Unavailable
from llamafleet.core.openai_api import (
    ChatCompletionRequest,
    CompletionRequest,
    error_body,
    validation_param,
)
from nodeagent.engine.core import Chunk, EngineCore
from nodeagent.engine.metrics import EngineMetrics

log = logging.getLogger(__name__)


def create_app(core: EngineCore, model_name: str, metrics: EngineMetrics) -> FastAPI:
    app = FastAPI(title=f"llamafleet engine ({model_name})", docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = validation_param(tuple(first["loc"]))
        return JSONResponse(
            error_body(f"{param}: {first['msg']}", "invalid_request_error", "invalid_value", param), 400
        )

    @app.exception_handler(InvalidRequest)
    async def on_invalid(_: Request, exc: InvalidRequest) -> JSONResponse:
        return JSONResponse(error_body(exc.message, "invalid_request_error", exc.code, exc.param), 400)

    @app.exception_handler(Unavailable)
    async def on_unavailable(_: Request, exc: Unavailable) -> JSONResponse:
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
        return JSONResponse(error_body(exc.message, "server_error", exc.code), 503, headers=headers)

    @app.exception_handler(LlamafleetError)
    async def on_error(_: Request, exc: LlamafleetError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, "server_error", exc.code), 500)

    @app.get("/health")
    async def health() -> JSONResponse:
        if not core.ready:
            return JSONResponse({"status": "loading", "model": model_name}, 503)
        return JSONResponse({"status": "ok", "model": model_name})

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.busy_slots.set(core.busy)
        metrics.queue_depth.set(core.queue_depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        _check_ready(core)
        if body.stream:
            return await _stream(core.chat_stream(body), "chat", metrics)
        return await _once(core.chat(body), "chat", metrics)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest) -> JSONResponse | StreamingResponse:
        _check_ready(core)
        if body.stream:
            return await _stream(core.complete_stream(body), "completions", metrics)
        return await _once(core.complete(body), "completions", metrics)

    return app


def _check_ready(core: EngineCore) -> None:
    if not core.ready:
        raise Unavailable("model is still loading", retry_after=1)


async def _once(result: Any, endpoint: str, metrics: EngineMetrics) -> JSONResponse:
    started = time.monotonic()
    try:
        body: dict[str, Any] = await result
    except InvalidRequest:
        metrics.requests.labels(endpoint, "invalid").inc()
        raise
    usage = body.get("usage") or {}
    metrics.generated_tokens.inc(usage.get("completion_tokens", 0))
    metrics.prompt_tokens.inc(usage.get("prompt_tokens", 0))
    metrics.request_seconds.labels(endpoint).observe(time.monotonic() - started)
    metrics.requests.labels(endpoint, "ok").inc()
    return JSONResponse(body)


async def _stream(chunks: AsyncIterator[Chunk], endpoint: str, metrics: EngineMetrics) -> StreamingResponse:
    """Pull the first chunk before answering, so bad input still gets a 400 rather than a 200 stream."""
    started = time.monotonic()
    try:
        first = await anext(chunks)
    except InvalidRequest:
        metrics.requests.labels(endpoint, "invalid").inc()
        raise

    async def sse() -> AsyncIterator[bytes]:
        outcome = "cancelled"
        try:
            yield _sse(first)
            async for chunk in chunks:
                if chunk.get("usage"):
                    metrics.prompt_tokens.inc(chunk["usage"].get("prompt_tokens", 0))
                else:
                    metrics.generated_tokens.inc(1)
                yield _sse(chunk)
            yield b"data: [DONE]\n\n"
            outcome = "ok"
        except LlamafleetError as exc:
            outcome = "error"
            log.warning("stream failed: %s", exc.message)
            yield _sse(error_body(exc.message, "server_error", exc.code))
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
            metrics.requests.labels(endpoint, outcome).inc()
            metrics.request_seconds.labels(endpoint).observe(time.monotonic() - started)

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

"""The engine's HTTP surface for one model replica: OpenAI endpoints, /health, /slots, /adapters, /metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llamafleet.contract.endpoints import INFERENCE
from llamafleet.contract.replica import AdapterSpec
from llamafleet.core import http_errors
from llamafleet.core.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimit
from llamafleet.core.engine_auth import EngineSecret
from llamafleet.core.errors import InvalidRequest, LlamafleetError, Unavailable
from llamafleet.core.llama_server_compat import LlamaServerCompat
from llamafleet.core.messages_api import CountTokensRequest, MessagesRequest
from llamafleet.core.native_api import NativeCompletionRequest
from llamafleet.core.openai_api import (
    AdapterLoadRequest,
    ApplyTemplateRequest,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    StreamOptions,
    TokenizeRequest,
    error_body,
)
from llamafleet.core.rerank_api import RerankRequest
from llamafleet.core.responses_api import ResponsesRequest
from llamafleet.core.threads import THREADS_PATH, ThreadsRequest
from nodeagent.engine.adapters import confined
from nodeagent.engine.core import EngineCore
from nodeagent.engine.messages_api import MessageBuilder
from nodeagent.engine.metrics import EngineMetrics
from nodeagent.engine.native_api import native_stream, native_whole
from nodeagent.engine.responses import Chunk
from nodeagent.engine.responses_api import ResponseBuilder

log = logging.getLogger(__name__)


def create_app(
    core: EngineCore,
    model_name: str,
    metrics: EngineMetrics,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    secret: str = "",
    adapter_dirs: list[Path] | None = None,
) -> FastAPI:
    """``secret``: required on every request but /health (Authorization: Bearer), none when empty.
    ``adapter_dirs``: the folders runtime adapter loads may read (any path when None or empty)."""
    app = FastAPI(title=f"llamafleet engine ({model_name})", docs_url=None, redoc_url=None)
    http_errors.install(app, "engine")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if secret:
        app.add_middleware(EngineSecret, secret=secret)  # nothing but path mapping runs before it
    app.add_middleware(LlamaServerCompat)
    folders = list(adapter_dirs or [])

    @app.get("/health")
    async def health() -> JSONResponse:
        if not core.ready:
            return JSONResponse({"status": "loading", "model": model_name}, 503)
        slots = core.slots()
        return JSONResponse(
            {
                "status": "ok",
                "model": model_name,
                "slots_total": len(slots),
                "slots_idle": sum(1 for s in slots if s["state"] == "idle"),
                "adapters": [a["name"] for a in core.adapters()],
                "threads": core.threads(),
            }
        )

    @app.put(THREADS_PATH)
    async def set_threads(body: ThreadsRequest) -> dict[str, int]:
        """The node agent shares the node's CPUs among its engines and moves this as replicas come and go."""
        _check_ready(core)
        return {"threads": await core.set_threads(body.threads)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The one model this engine serves, as OpenAI's list (llama-server answers it too)."""
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "llamafleet"}]}

    @app.get("/slots")
    async def slots() -> list[dict[str, Any]]:
        _check_ready(core)
        return core.slots()

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        _check_ready(core)
        if body.stream:
            return await _stream(core.chat_stream(body), "chat", metrics)
        return await _once(core.chat(body), "chat", metrics, request)

    async def completions(body: CompletionRequest, request: Request) -> Response:
        _check_ready(core)
        if body.stream:
            return await _stream(core.complete_stream(body), "completions", metrics)
        return await _once(core.complete(body), "completions", metrics, request)

    async def native_completion(body: NativeCompletionRequest, request: Request) -> Response:
        """llama-server's own completion API (nodeagent/engine/native_api.py)."""
        _check_ready(core)
        body.as_completions()  # bad input (a streamed list too) is a 400 before anything runs
        if body.stream:
            chunks = native_stream(core.complete_stream(body.as_completion()), body.model or model_name)
            return await _stream(chunks, "completion", metrics, done=b"")
        return await _once(native_whole(body, core.complete), "completion", metrics, request)

    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        _check_ready(core)
        return await _once(core.embed(body), "embeddings", metrics, request)

    async def rerank(body: RerankRequest, request: Request) -> Response:
        _check_ready(core)
        return await _once(core.rerank(body), "rerank", metrics, request)

    async def responses(body: ResponsesRequest, request: Request) -> Response:
        _check_ready(core)
        chat = body.as_chat()
        builder = ResponseBuilder(body, body.model or model_name)
        if body.stream:
            chat = chat.model_copy(update={"stream_options": StreamOptions(include_usage=True)})
            events = builder.events(core.chat_stream(chat))
            return await _stream(events, "responses", metrics, done=b"", named=True)

        async def whole() -> dict[str, Any]:
            return builder.from_chat(await core.chat(chat))

        return await _once(whole(), "responses", metrics, request)

    async def messages(body: MessagesRequest, request: Request) -> Response:
        _check_ready(core)
        chat = body.as_chat()
        builder = MessageBuilder(body.model or model_name)
        if body.stream:
            chat = chat.model_copy(update={"stream_options": StreamOptions(include_usage=True)})
            events = builder.events(core.chat_stream(chat), core.count_prompt_tokens(chat))
            return await _stream(events, "messages", metrics, done=b"", named=True)

        async def whole() -> dict[str, Any]:
            return builder.from_chat(await core.chat(chat))

        return await _once(whole(), "messages", metrics, request)

    async def chat_input_tokens(body: ChatCompletionRequest) -> dict[str, int]:
        """llama-server's: the prompt tokens a chat request would take, without running it."""
        _check_ready(core)
        return {"input_tokens": core.count_prompt_tokens(body)}

    async def count_message_tokens(body: CountTokensRequest) -> dict[str, int]:
        """Anthropic's token counting (Claude Code and the SDKs call it before long requests)."""
        _check_ready(core)
        return {"input_tokens": core.count_prompt_tokens(body.as_chat())}

    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        _check_ready(core)
        tokens = core.tokenize(body.content, body.add_special)
        if body.with_pieces:
            return {"tokens": [{"id": t, "piece": core.detokenize([t])} for t in tokens]}
        return {"tokens": tokens}

    async def detokenize(body: DetokenizeRequest) -> dict[str, str]:
        _check_ready(core)
        return {"content": core.detokenize(body.tokens)}

    async def apply_template(body: ApplyTemplateRequest) -> dict[str, str]:
        _check_ready(core)
        return {"prompt": core.apply_template(body)}

    # The paths are llamafleet/contract/endpoints.py's, each handled by the function of its label.
    handlers: dict[str, Callable[..., Awaitable[Any]]] = {
        "chat": chat, "completions": completions, "completion": native_completion, "embeddings": embeddings,
        "rerank": rerank, "responses": responses, "messages": messages, "input_tokens": chat_input_tokens,
        "count_tokens": count_message_tokens, "tokenize": tokenize, "detokenize": detokenize,
        "apply_template": apply_template,
    }  # fmt: skip
    for endpoint in INFERENCE:
        app.add_api_route(endpoint.path, handlers[endpoint.label], methods=["POST"], name=endpoint.label)

    @app.get("/adapters")
    async def adapters() -> dict[str, Any]:
        return {"object": "list", "data": core.adapters()}

    @app.post("/adapters")
    async def load_adapter(body: AdapterLoadRequest) -> dict[str, Any]:
        _check_ready(core)
        return await core.load_adapter(AdapterSpec(body.name, str(confined(body.path, folders)), body.scale))

    @app.delete("/adapters/{name}")
    async def unload_adapter(name: str) -> dict[str, Any]:
        _check_ready(core)
        await core.unload_adapter(name)
        return {"name": name, "unloaded": True}

    return app


def _check_ready(core: EngineCore) -> None:
    if not core.ready:
        raise Unavailable("model is still loading", retry_after=1)


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is already read, so only http.disconnect is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _once(
    result: Awaitable[dict[str, Any] | list[Any]], endpoint: str, metrics: EngineMetrics, request: Request
) -> Response:
    """Await a whole response, but cancel it — freeing its slot — if the client disconnects first."""
    started = time.monotonic()
    work = asyncio.ensure_future(result)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not work.done():
        work.cancel()
        metrics.requests.labels(endpoint, "cancelled").inc()
        return Response(status_code=499)  # nobody is listening; nginx's "client closed request"
    try:
        body = work.result()
    except InvalidRequest:
        metrics.requests.labels(endpoint, "invalid").inc()
        raise
    metrics.request_seconds.labels(endpoint).observe(time.monotonic() - started)
    metrics.requests.labels(endpoint, "ok").inc()
    return JSONResponse(body)


async def _stream(
    chunks: AsyncIterator[Chunk],
    endpoint: str,
    metrics: EngineMetrics,
    done: bytes = b"data: [DONE]\n\n",
    named: bool = False,
) -> StreamingResponse:
    """Pull the first chunk before answering, so bad input still gets a 400 rather than a 200 stream.
    ``done``: the stream's last line (the Responses and Messages APIs send none); ``named``: each
    event also gets an ``event:`` line with its type, as those two APIs' clients read it."""
    started = time.monotonic()
    try:
        first = await anext(chunks)
    except InvalidRequest:
        metrics.requests.labels(endpoint, "invalid").inc()
        raise

    async def sse() -> AsyncIterator[bytes]:
        outcome = "cancelled"
        try:
            yield _sse(first, named)
            async for chunk in chunks:
                yield _sse(chunk, named)
            yield done
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


def _sse(payload: dict[str, Any], named: bool = False) -> bytes:
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return f"event: {payload.get('type', 'message')}\n".encode() + data if named else data

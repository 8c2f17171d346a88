"""POST /v1/chat/completions, /v1/completions and /v1/embeddings: validate, then hand to the proxy."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from controlplane.gateway.balancer.keys import SESSION_HEADER
from controlplane.gateway.proxy import EngineProxy, Forward
from llamafleet.core.openai_api import ChatCompletionRequest, CompletionRequest, EmbeddingRequest


def _headers(request: Request) -> dict[str, str]:
    """The client headers the balancer reads (sticky sessions)."""
    session = request.headers.get(SESSION_HEADER)
    return {SESSION_HEADER: session} if session else {}


def router(proxy: EngineProxy) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
        raw = await request.body()
        return await proxy.forward(
            Forward("/v1/chat/completions", "chat", body.model, raw, body.stream, _headers(request))
        )

    @api.post("/v1/completions", response_model=None)
    async def completions(request: Request, body: CompletionRequest) -> Response:
        raw = await request.body()
        return await proxy.forward(
            Forward("/v1/completions", "completions", body.model, raw, body.stream, _headers(request))
        )

    @api.post("/v1/embeddings", response_model=None)
    async def embeddings(request: Request, body: EmbeddingRequest) -> Response:
        raw = await request.body()
        return await proxy.forward(Forward("/v1/embeddings", "embeddings", body.model, raw, False))

    return api

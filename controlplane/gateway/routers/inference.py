"""POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/rerank and llama-server's /completion,
/tokenize, /detokenize and /apply-template: validate, check the key's scope and quota, then hand to the proxy
(routed by ``model`` like chat)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from controlplane.gateway.access.keys import request_key
from controlplane.gateway.access.quota import Quotas
from controlplane.gateway.balancer.keys import SESSION_HEADER
from controlplane.gateway.model_names import ModelNames
from controlplane.gateway.proxy import EngineProxy, Forward
from controlplane.gateway.usage import reservation, with_usage
from llamafleet.core.errors import Forbidden, QuotaExceeded
from llamafleet.core.messages_api import CountTokensRequest, MessagesRequest
from llamafleet.core.native_api import NativeCompletionRequest
from llamafleet.core.openai_api import (
    ApplyTemplateRequest,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    TokenizeRequest,
)
from llamafleet.core.rerank_api import RerankRequest
from llamafleet.core.responses_api import ResponsesRequest


def _headers(request: Request) -> dict[str, str]:
    """The client headers the balancer reads (sticky sessions)."""
    session = request.headers.get(SESSION_HEADER)
    return {SESSION_HEADER: session} if session else {}


# Streams whose usage comes in a chunk of its own, only when stream_options.include_usage asks for it
# (the Responses and Messages streams always carry theirs; llama-server's /completion too).
USAGE_CHUNK_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


def include_usage(body: object) -> bool:
    options = getattr(body, "stream_options", None)
    return bool(getattr(options, "include_usage", False))


def adapters_asked(body: object) -> list[str]:
    """The adapters a request's ``lora`` field names (the request types that have one)."""
    return [choice.name for choice in getattr(body, "lora", None) or []]


def router(proxy: EngineProxy, quotas: Quotas, names: ModelNames) -> APIRouter:
    api = APIRouter()

    async def forward(request: Request, path: str, label: str, body: Any, stream: bool) -> Response:
        asked: str = body.model
        model = names.resolve(asked)
        key = request_key(request.state)
        raw = names.rewrite(await request.body(), asked, model)
        try:
            key.require(model)
            # ``lora`` names adapters as ``base:adapter`` does: each is checked as that model.
            for adapter in adapters_asked(body):
                key.require(f"{model.partition(':')[0]}:{adapter}")
            reserved = await quotas.admit(key, reservation(raw, body) if key.tokens_per_minute else 0)
        except (Forbidden, QuotaExceeded) as exc:
            proxy.count_refused(key, model, exc)
            raise
        # A key with a token quota is charged every stream's real tokens: ask the engine for the
        # usage chunk, and drop it from the stream when the client did not ask for it.
        strip = bool(
            key.tokens_per_minute and stream and path in USAGE_CHUNK_PATHS and not include_usage(body)
        )
        if strip:
            raw = with_usage(raw)
        forward = Forward(path, label, model, raw, stream, _headers(request), key, reserved, strip)
        return await proxy.forward(forward)

    @api.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
        return await forward(request, "/v1/chat/completions", "chat", body, body.stream)

    @api.post("/v1/completions", response_model=None)
    async def completions(request: Request, body: CompletionRequest) -> Response:
        return await forward(request, "/v1/completions", "completions", body, body.stream)

    @api.post("/completion", response_model=None)
    async def native_completion(request: Request, body: NativeCompletionRequest) -> Response:
        body.as_completions()  # refused here by the same rules the engine applies
        return await forward(request, "/completion", "completion", body, body.stream)

    @api.post("/v1/embeddings", response_model=None)
    async def embeddings(request: Request, body: EmbeddingRequest) -> Response:
        return await forward(request, "/v1/embeddings", "embeddings", body, False)

    @api.post("/v1/rerank", response_model=None)
    async def rerank(request: Request, body: RerankRequest) -> Response:
        return await forward(request, "/v1/rerank", "rerank", body, False)

    @api.post("/v1/responses", response_model=None)
    async def responses(request: Request, body: ResponsesRequest) -> Response:
        body.as_chat()  # a request the engine would refuse is refused here, by the same rules
        return await forward(request, "/v1/responses", "responses", body, body.stream)

    @api.post("/v1/messages", response_model=None)
    async def messages(request: Request, body: MessagesRequest) -> Response:
        body.as_chat()  # refused here by the same rules the engine applies
        return await forward(request, "/v1/messages", "messages", body, body.stream)

    @api.post("/v1/chat/completions/input_tokens", response_model=None)
    async def chat_input_tokens(request: Request, body: ChatCompletionRequest) -> Response:
        return await forward(request, "/v1/chat/completions/input_tokens", "input_tokens", body, False)

    @api.post("/v1/messages/count_tokens", response_model=None)
    async def count_message_tokens(request: Request, body: CountTokensRequest) -> Response:
        body.as_chat()
        return await forward(request, "/v1/messages/count_tokens", "count_tokens", body, False)

    @api.post("/tokenize", response_model=None)
    async def tokenize(request: Request, body: TokenizeRequest) -> Response:
        return await forward(request, "/tokenize", "tokenize", body, False)

    @api.post("/detokenize", response_model=None)
    async def detokenize(request: Request, body: DetokenizeRequest) -> Response:
        return await forward(request, "/detokenize", "detokenize", body, False)

    @api.post("/apply-template", response_model=None)
    async def apply_template(request: Request, body: ApplyTemplateRequest) -> Response:
        return await forward(request, "/apply-template", "apply_template", body, False)

    return api

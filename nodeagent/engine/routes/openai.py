"""The engine's handlers for OpenAI's endpoints (llamafleet/protocol/openai.py's table)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from llamafleet.protocol.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from nodeagent.engine.routes.serving import Handler, Serving


def handlers(s: Serving) -> dict[str, Handler]:
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        s.check_ready()
        if body.stream:
            return await s.stream(s.core.chat_stream(body), "chat")
        return await s.once(s.core.chat(body), "chat", request)

    async def completions(body: CompletionRequest, request: Request) -> Response:
        s.check_ready()
        if body.stream:
            return await s.stream(s.core.complete_stream(body), "completions")
        return await s.once(s.core.complete(body), "completions", request)

    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        s.check_ready()
        return await s.once(s.core.embed(body), "embeddings", request)

    return {"chat": chat, "completions": completions, "embeddings": embeddings}

"""The engine's handler for OpenAI's Responses API (llamafleet/protocol/responses.py's table): served as
the chat request it translates to, the answer rebuilt as a response."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from llamafleet.protocol.openai import StreamOptions
from llamafleet.protocol.responses import ResponseBuilder, ResponsesRequest
from nodeagent.engine.routes.serving import Handler, Serving


def handlers(s: Serving) -> dict[str, Handler]:
    async def responses(body: ResponsesRequest, request: Request) -> Response:
        s.check_ready()
        chat = body.as_chat()
        builder = ResponseBuilder(body, body.model or s.model_name)
        if body.stream:
            chat = chat.model_copy(update={"stream_options": StreamOptions(include_usage=True)})
            return await s.stream(builder.events(s.core.chat_stream(chat)), "responses", done=b"", named=True)

        async def whole() -> dict[str, Any]:
            return builder.from_chat(await s.core.chat(chat))

        return await s.once(whole(), "responses", request)

    return {"responses": responses}

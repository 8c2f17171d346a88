"""The engine's handlers for Anthropic's Messages API (llamafleet/protocol/messages.py's table): served
as the chat request it translates to, the answer rebuilt as a message."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from llamafleet.protocol.messages import CountTokensRequest, MessageBuilder, MessagesRequest
from llamafleet.protocol.openai import StreamOptions
from nodeagent.engine.routes.serving import Handler, Serving


def handlers(s: Serving) -> dict[str, Handler]:
    async def messages(body: MessagesRequest, request: Request) -> Response:
        s.check_ready()
        chat = body.as_chat()
        builder = MessageBuilder(body.model or s.model_name)
        if body.stream:
            chat = chat.model_copy(update={"stream_options": StreamOptions(include_usage=True)})
            events = builder.events(s.core.chat_stream(chat), s.core.count_prompt_tokens(chat))
            return await s.stream(events, "messages", done=b"", named=True)

        async def whole() -> dict[str, Any]:
            return builder.from_chat(await s.core.chat(chat))

        return await s.once(whole(), "messages", request)

    async def count_tokens(body: CountTokensRequest) -> dict[str, int]:
        """Anthropic's token counting (Claude Code and the SDKs call it before long requests)."""
        s.check_ready()
        return {"input_tokens": s.core.count_prompt_tokens(body.as_chat())}

    return {"messages": messages, "count_tokens": count_tokens}

"""Chat answers as Anthropic Messages API objects and stream events (``POST /v1/messages``).

The engine serves a Messages request as the chat request it translates to
(llamafleet/core/messages_api.py): text becomes a ``text`` block, each tool call a ``tool_use``
block with its input as an object, finish reasons become ``end_turn`` / ``max_tokens`` /
``tool_use``. Streams follow Anthropic's event sequence: message_start, per block
content_block_start → content_block_delta (text_delta | input_json_delta)… → content_block_stop,
then message_delta (stop_reason, output tokens) and message_stop.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

Event = dict[str, Any]
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class MessageBuilder:
    def __init__(self, model: str) -> None:
        self.id = f"msg_{uuid.uuid4().hex}"
        self.model = model

    def message(self, content: list[dict[str, Any]], stop_reason: str | None, usage: dict[str, int]) -> Event:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

    def from_chat(self, whole: dict[str, Any]) -> Event:
        choice = whole["choices"][0]
        message = choice["message"]
        content: list[dict[str, Any]] = []
        if message.get("content"):
            content.append({"type": "text", "text": message["content"]})
        content.extend(_tool_use(call) for call in message.get("tool_calls") or [])
        return self.message(
            content, STOP_REASONS.get(choice["finish_reason"], "end_turn"), _usage(whole["usage"])
        )

    async def events(self, chunks: AsyncIterator[Event], input_tokens: int = 0) -> AsyncIterator[Event]:
        """A chat stream (with usage) → Anthropic stream events; ``input_tokens``: the prompt's, which
        message_start reports as Anthropic's does (clients track their context with it)."""
        yield {
            "type": "message_start",
            "message": self.message([], None, {"input_tokens": input_tokens, "output_tokens": 0}),
        }
        index = -1
        text_open = False
        stop_reason = "end_turn"
        usage = {"input_tokens": 0, "output_tokens": 0}
        async for chunk in chunks:
            if chunk.get("usage"):
                usage = _usage(chunk["usage"])
            for choice in chunk.get("choices", []):
                delta = choice.get("delta", {})
                if delta.get("content"):
                    if not text_open:
                        index, text_open = index + 1, True
                        yield {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {"type": "text", "text": ""},
                        }
                    yield {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": delta["content"]},
                    }
                for call in delta.get("tool_calls") or []:
                    if text_open:
                        yield {"type": "content_block_stop", "index": index}
                        text_open = False
                    index += 1
                    block = _tool_use(call)
                    yield {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {**block, "input": {}},
                    }
                    yield {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
                    }
                    yield {"type": "content_block_stop", "index": index}
                if choice.get("finish_reason"):
                    stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        if text_open:
            yield {"type": "content_block_stop", "index": index}
        yield {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        }
        yield {"type": "message_stop"}


def _usage(usage: dict[str, Any]) -> dict[str, int]:
    cached = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    return {
        "input_tokens": usage["prompt_tokens"],
        "output_tokens": usage["completion_tokens"],
        "cache_read_input_tokens": cached,
    }


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    try:
        arguments = json.loads(call["function"]["arguments"])
    except ValueError:
        arguments = {}
    return {
        "type": "tool_use",
        "id": call["id"].replace("call_", "toolu_", 1),
        "name": call["function"]["name"],
        "input": arguments,
    }

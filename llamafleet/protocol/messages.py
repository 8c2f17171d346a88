"""Anthropic's Messages API (``POST /v1/messages``): the request schema, its translation to a chat
request, and the answers shaped back from the chat answer — one dialect, written once for the
gateway (validation, routing, usage) and the engine (serving).

Text and tools: ``system``, text blocks, ``tool_use`` / ``tool_result`` blocks in the history,
``tools`` with ``input_schema``, ``tool_choice`` (auto, any, tool, none). Images, documents and
extended thinking are refused by name.

Answers: text becomes a ``text`` block, each tool call a ``tool_use`` block with its input as an
object, finish reasons become ``end_turn`` / ``max_tokens`` / ``tool_use``. Streams follow
Anthropic's event sequence: message_start, per block content_block_start → content_block_delta
(text_delta | input_json_delta)… → content_block_stop, then message_delta (stop_reason, output
tokens) and message_stop.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llamafleet.core.errors import InvalidRequest
from llamafleet.protocol.endpoint import Endpoint, Tokens, input_output
from llamafleet.protocol.openai import ChatCompletionRequest, ModelName, validate_as


class MessagesTool(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: ModelName = ""
    max_tokens: int = Field(ge=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    stream: bool = False
    tools: list[MessagesTool] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None

    def as_chat(self) -> ChatCompletionRequest:
        """The same request as chat completions (what the engine serves)."""
        if self.thinking and self.thinking.get("type") != "disabled":
            raise InvalidRequest(
                "extended thinking is not supported by this server; leave it out", "thinking"
            )
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": _text(self.system, "system")})
        for i, message in enumerate(self.messages):
            messages.extend(_turn(message, f"messages.{i}"))
        chat: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "stop": self.stop_sequences,
        }
        if self.tools:
            chat["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
                }
                for t in self.tools
            ]
        choice = (self.tool_choice or {}).get("type")
        if choice == "any":
            chat["tool_choice"] = "required"
        elif choice == "tool":
            chat["tool_choice"] = {"type": "function", "function": {"name": self.tool_choice["name"]}}  # type: ignore[index]
        elif choice in ("auto", "none"):
            chat["tool_choice"] = choice
        if self.tool_choice and self.tool_choice.get("disable_parallel_tool_use") is False:
            chat["parallel_tool_calls"] = True
        return validate_as(ChatCompletionRequest, {k: v for k, v in chat.items() if v is not None})


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if block.get("type") != "text":
            raise InvalidRequest(f"{block.get('type')!r} blocks are not supported here (text only)", where)
        parts.append(block.get("text", ""))
    return "".join(parts)


def _turn(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """One Anthropic turn as chat messages: tool_use blocks become the assistant's tool_calls,
    tool_result blocks become tool messages (before the rest of the user's turn)."""
    role: Literal["user", "assistant"] = message.get("role", "user")
    content = message.get("content", "")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    text, calls, results = [], [], []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "tool_use" and role == "assistant":
            function = {"name": block.get("name", ""), "arguments": json.dumps(block.get("input", {}))}
            calls.append({"id": block.get("id", ""), "type": "function", "function": function})
        elif kind == "tool_result" and role == "user":
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id", ""),
                    "content": _text(block.get("content", ""), where),
                }
            )
        else:
            raise InvalidRequest(f"{kind!r} blocks are not supported in {role} turns", where)
    out: list[dict[str, Any]] = [*results]
    if role == "assistant" and calls:
        out.append({"role": "assistant", "content": "".join(text) or None, "tool_calls": calls})
    elif text or not results:
        out.append({"role": role, "content": "".join(text)})
    return out


class CountTokensRequest(MessagesRequest):
    """POST /v1/messages/count_tokens: a Messages request without max_tokens; answers input_tokens."""

    max_tokens: int = Field(default=1, ge=1)


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


def usage(payload: Any) -> Tokens | None:
    """A message's usage; streamed, the input in ``message_start``'s message and the output in
    ``message_delta``'s usage."""
    return input_output(payload, "message")


def pieces(payload: Any) -> int:
    return int(
        isinstance(payload, dict)
        and payload.get("type") == "content_block_delta"
        and (payload.get("delta") or {}).get("type") == "text_delta"
    )


def _as_chat(body: MessagesRequest | CountTokensRequest) -> object:
    return body.as_chat()


ENDPOINTS = (
    Endpoint("/v1/messages", "messages", MessagesRequest, usage, streams=True, pieces=pieces, check=_as_chat),
    Endpoint("/v1/messages/count_tokens", "count_tokens", CountTokensRequest, check=_as_chat),
)

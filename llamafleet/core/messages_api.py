"""Anthropic's Messages API (``POST /v1/messages``): the request schema and its translation to a
chat request, shared by the gateway (validation, routing) and the engine.

Text and tools: ``system``, text blocks, ``tool_use`` / ``tool_result`` blocks in the history,
``tools`` with ``input_schema``, ``tool_choice`` (auto, any, tool, none). Images, documents and
extended thinking are refused by name.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llamafleet.core.errors import InvalidRequest
from llamafleet.core.openai_api import ChatCompletionRequest, ModelName, validate_as


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

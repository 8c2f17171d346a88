"""OpenAI's Responses API (``POST /v1/responses``, what the Agents SDK calls): the request schema,
its translation to a chat request, and the answers shaped back from the chat answer — one dialect,
written once for the gateway (validation, routing, usage) and the engine (serving).

Stateless: ``previous_response_id`` and stored responses are refused (send the whole
conversation as ``input``, as ``store: false`` clients do); text and function tools only.

Answers: a ``message`` output item with ``output_text``, one ``function_call`` item per tool call,
``incomplete`` at max_output_tokens. Streams follow the Responses event sequence: response.created,
then per item output_item.added → (content_part.added → output_text.delta… → output_text.done →
content_part.done | function_call_arguments.delta → …done) → output_item.done, then
response.completed with the whole response.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llamafleet.core.errors import InvalidRequest
from llamafleet.protocol.endpoint import Endpoint, Tokens, input_output
from llamafleet.protocol.openai import ChatCompletionRequest, ModelName, validate_as


class ResponsesTool(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: TextFormat = Field(default_factory=TextFormat)


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: ModelName = ""
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stream: bool = False
    text: TextOptions | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    user: str | None = None

    @field_validator("previous_response_id")
    @classmethod
    def _stateless(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("this server keeps no responses: send the whole conversation as input")
        return value

    def as_chat(self) -> ChatCompletionRequest:
        """The same request as chat completions (what the engine serves)."""
        messages: list[dict[str, Any]] = []
        if self.instructions:
            messages.append({"role": "system", "content": self.instructions})
        for item in [{"role": "user", "content": self.input}] if isinstance(self.input, str) else self.input:
            messages.extend(_message(item, messages))
        chat: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_output_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "parallel_tool_calls": self.parallel_tool_calls,
        }
        if self.tools:
            functions = [t.model_dump(exclude={"type"}, exclude_none=True) for t in self.tools]
            chat["tools"] = [{"type": "function", "function": f} for f in functions]
        if isinstance(self.tool_choice, dict):  # {"type": "function", "name": ...}
            chat["tool_choice"] = {"type": "function", "function": {"name": self.tool_choice.get("name", "")}}
        elif self.tool_choice is not None:
            chat["tool_choice"] = self.tool_choice
        fmt = self.text.format if self.text else None
        if fmt is not None and fmt.type == "json_object":
            chat["response_format"] = {"type": "json_object"}
        elif fmt is not None and fmt.type == "json_schema":
            chat["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict},
            }
        return validate_as(
            ChatCompletionRequest,
            {k: v for k, v in chat.items() if v is not None},
            lambda where: "input" if where.startswith("messages") else where,
        )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def _message(item: dict[str, Any], so_far: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One input item as chat messages: a message, a function call (joined to the assistant turn
    before it), or a function call's output."""
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role", "user")
        return [{"role": "system" if role == "developer" else role, "content": _text(item.get("content"))}]
    if kind == "function_call":
        function = {"name": item.get("name", ""), "arguments": item.get("arguments", "{}")}
        call = {"id": item.get("call_id", ""), "type": "function", "function": function}
        if so_far and so_far[-1]["role"] == "assistant" and "tool_calls" in so_far[-1]:
            so_far[-1]["tool_calls"].append(call)
            return []
        return [{"role": "assistant", "content": None, "tool_calls": [call]}]
    if kind == "function_call_output":
        output = item.get("output", "")
        return [
            {
                "role": "tool",
                "tool_call_id": item.get("call_id", ""),
                "content": output if isinstance(output, str) else _text(output),
            }
        ]
    raise InvalidRequest(
        f"input items of type {kind!r} are not supported (message, function_call, function_call_output)",
        "input",
    )


Event = dict[str, Any]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseBuilder:
    """One Responses answer, built whole or event by event."""

    def __init__(self, request: ResponsesRequest, model: str) -> None:
        self.request = request
        self.id = _id("resp")
        self.model = model
        self.created_at = int(time.time())
        self.output: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None
        self._sequence = 0

    def response(self, status: str) -> dict[str, Any]:
        request = self.request
        incomplete = status == "completed" and self.finish == "length"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "model": self.model,
            "status": "incomplete" if incomplete else status,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "error": None,
            "instructions": request.instructions,
            "output": self.output,
            "parallel_tool_calls": bool(request.parallel_tool_calls),
            "tool_choice": request.tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in request.tools or []],
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_output_tokens": request.max_output_tokens,
            "text": (
                request.text.model_dump(by_alias=True, exclude_none=True)
                if request.text
                else {"format": {"type": "text"}}
            ),
            "usage": self.usage,
            "store": False,
            "previous_response_id": None,
        }

    def take_usage(self, usage: dict[str, Any]) -> None:
        self.usage = {
            "input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": usage["prompt_tokens_details"]["cached_tokens"]},
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["total_tokens"],
        }

    def from_chat(self, whole: dict[str, Any]) -> dict[str, Any]:
        """A whole chat answer → the whole Responses object."""
        choice = whole["choices"][0]
        message = choice["message"]
        if message.get("content"):
            self.output.append(_message_item(_id("msg"), message["content"], "completed"))
        for call in message.get("tool_calls") or []:
            self.output.append(_call_item(call, "completed"))
        self.finish = choice["finish_reason"]
        self.take_usage(whole["usage"])
        return self.response("completed")

    def event(self, type_: str, **fields: Any) -> Event:
        self._sequence += 1
        return {"type": type_, "sequence_number": self._sequence - 1, **fields}

    async def events(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Event]:
        """A chat stream (with usage) → Responses stream events."""
        yield self.event("response.created", response=self.response("in_progress"))
        yield self.event("response.in_progress", response=self.response("in_progress"))
        text: dict[str, Any] | None = None  # the message item being streamed
        async for chunk in chunks:
            if chunk.get("usage"):
                self.take_usage(chunk["usage"])
            for choice in chunk.get("choices", []):
                delta = choice.get("delta", {})
                if delta.get("content"):
                    if text is None:
                        text = _message_item(_id("msg"), "", "in_progress")
                        for event in self._open_text(text):
                            yield event
                    text["content"][0]["text"] += delta["content"]
                    yield self.event(
                        "response.output_text.delta",
                        item_id=text["id"],
                        output_index=len(self.output) - 1,
                        content_index=0,
                        delta=delta["content"],
                        logprobs=[],
                    )
                for call in delta.get("tool_calls") or []:
                    if text is not None:
                        for event in self._close_text(text):
                            yield event
                        text = None
                    for event in self._call_events(call):
                        yield event
                if choice.get("finish_reason"):
                    self.finish = choice["finish_reason"]
        if text is not None:
            for event in self._close_text(text):
                yield event
        final = self.response("completed")
        yield self.event(f"response.{final['status']}", response=final)

    def _open_text(self, item: dict[str, Any]) -> list[Event]:
        self.output.append(item)
        index = len(self.output) - 1
        return [
            self.event("response.output_item.added", output_index=index, item={**item, "content": []}),
            self.event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            ),
        ]

    def _close_text(self, item: dict[str, Any]) -> list[Event]:
        index = self.output.index(item)
        item["status"] = "completed"
        part = item["content"][0]
        return [
            self.event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            ),
            self.event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            ),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    def _call_events(self, call: dict[str, Any]) -> list[Event]:
        item = _call_item(call, "in_progress")
        self.output.append(item)
        index = len(self.output) - 1
        arguments = item["arguments"]
        events = [
            self.event("response.output_item.added", output_index=index, item={**item, "arguments": ""}),
            self.event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=arguments,
            ),
            self.event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=arguments,
            ),
        ]
        item["status"] = "completed"
        events.append(self.event("response.output_item.done", output_index=index, item=item))
        return events


def _message_item(id_: str, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": id_,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _call_item(call: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": _id("fc"),
        "call_id": call["id"],
        "name": call["function"]["name"],
        "arguments": call["function"]["arguments"],
        "status": status,
    }


def usage(payload: Any) -> Tokens | None:
    """A response's usage, or that of the response a stream event carries (``response.completed``)."""
    return input_output(payload, "response")


def pieces(payload: Any) -> int:
    return int(isinstance(payload, dict) and payload.get("type") == "response.output_text.delta")


def _as_chat(body: ResponsesRequest) -> object:
    return body.as_chat()


ENDPOINTS = (
    Endpoint("/v1/responses", "responses", ResponsesRequest, usage, streams=True, pieces=pieces,
             check=_as_chat),
)  # fmt: skip

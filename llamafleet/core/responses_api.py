"""OpenAI's Responses API (``POST /v1/responses``, what the Agents SDK calls): the request schema and
its translation to a chat request, shared by the gateway (validation, routing) and the engine.

Stateless: ``previous_response_id`` and stored responses are refused (send the whole
conversation as ``input``, as ``store: false`` clients do); text and function tools only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llamafleet.core.errors import InvalidRequest
from llamafleet.core.openai_api import ChatCompletionRequest, ModelName, validate_as


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

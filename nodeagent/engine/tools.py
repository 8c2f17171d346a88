"""Tool calling: a chat request's ``tools`` → what the model's template renders, what grammar (if
any) shapes the output, and how the output is read back into OpenAI ``tool_calls``.

The format is the one the model's own chat template speaks, recognised as llama.cpp's chat
parsers recognise it (common/chat.cpp):

- **Hermes / Qwen** (the template mentions ``<tool_call>``): the template renders the tools; calls
  come as ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` blocks.
- **Llama 3.x** (``<|python_tag|>`` or ``ipython``): a call is a JSON object ``{"name": …,
  "parameters": {…}}``, optionally after ``<|python_tag|>``.
- **Mistral** (``[TOOL_CALLS]``): ``[TOOL_CALLS][{"name": …, "arguments": {…}}, …]``.
- **Generic** (every other template, SmolLM2's and gemma3's among them): the tools and the answer
  format go into the system message, and a grammar makes the whole answer one JSON object:
  ``{"tool_call": {"name", "arguments"}}`` (``"tool_calls": [...]`` when parallel calls are
  allowed) or ``{"response": "…"}``. Earlier calls and tool results in the history are written the
  same way, so templates without a tool role still render them.

``tool_choice``: ``none`` renders no tools; ``required`` and a named function constrain the output
to calls (of that function) in every format; ``auto`` constrains only the generic format (a
native template's model decides for itself, and its output is parsed). Arguments are constrained
by each tool's parameter schema where the grammar applies, keywords it cannot enforce dropped
(nodeagent/engine/json_schema.py).
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from llamafleet.protocol.openai import ChatCompletionRequest, ChatMessage, NamedToolChoice, Tool
from nodeagent.engine.json_schema import enforceable, schema_grammar


class ToolFormat(enum.Enum):
    GENERIC = "generic"
    HERMES = "hermes"
    LLAMA3 = "llama3"
    MISTRAL = "mistral"


def detect(template: str | None) -> ToolFormat:
    text = template or ""
    if "<tool_call>" in text:
        return ToolFormat.HERMES
    if "[TOOL_CALLS]" in text:
        return ToolFormat.MISTRAL
    if "<|python_tag|>" in text or "ipython" in text:
        return ToolFormat.LLAMA3
    return ToolFormat.GENERIC


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text

    def openai(self, index: int | None = None) -> dict[str, Any]:
        call: dict[str, Any] = {"id": self.id, "type": "function",
                                "function": {"name": self.name, "arguments": self.arguments}}  # fmt: skip
        return call if index is None else {"index": index, **call}


@dataclass(frozen=True)
class ToolPlan:
    """How one chat request with tools is rendered, constrained and read back."""

    format: ToolFormat
    messages: list[dict[str, Any]]  # for the template
    tools: list[dict[str, Any]] | None  # for the template (None: the system message carries them)
    grammar: str  # '' when the output is free

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """(content, calls) of the model's answer; an answer that holds no call is all content."""
        return PARSERS[self.format](text)


GENERIC_INSTRUCTIONS = (
    "You can call these tools (JSON schemas of their arguments):\n{tools}\n\n"
    'Answer with one JSON object: {{"{key}": {example}}} to call {what}'
    "{otherwise}."
)


def plan(request: ChatCompletionRequest, fmt: ToolFormat) -> ToolPlan | None:
    """None when the request offers no tools (or forbids them): plain chat."""
    if not request.tools or request.tool_choice == "none":
        return None
    offered = _offered(request.tools, request.tool_choice)
    forced = request.tool_choice == "required" or isinstance(request.tool_choice, NamedToolChoice)
    parallel = bool(request.parallel_tool_calls)  # llama-server's default (off): small models loop in lists
    if fmt == ToolFormat.GENERIC:
        messages = _generic_history(request.messages)
        _add_system(messages, _generic_instructions(offered, forced, parallel))
        grammar = schema_grammar(_generic_schema(offered, forced, parallel), "tools")
        return ToolPlan(fmt, messages, None, grammar)
    grammar = _native_grammar(fmt, offered, parallel) if forced else ""
    rendered = [t.model_dump(exclude_none=True) for t in offered]
    return ToolPlan(fmt, _native_history(request.messages), rendered, grammar)


def _offered(tools: list[Tool], choice: object) -> list[Tool]:
    if isinstance(choice, NamedToolChoice):
        return [t for t in tools if t.function.name == choice.name]
    return tools


def _call_schema(tool: Tool, arguments_key: str = "arguments") -> dict[str, Any]:
    parameters = enforceable(tool.function.parameters or {"type": "object"})
    properties = {"name": {"const": tool.function.name}, arguments_key: parameters}
    return {"type": "object", "properties": properties, "required": ["name", arguments_key],
            "additionalProperties": False}  # fmt: skip


def _calls_schema(tools: list[Tool], arguments_key: str = "arguments") -> dict[str, Any]:
    calls = [_call_schema(t, arguments_key) for t in tools]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def _generic_schema(tools: list[Tool], forced: bool, parallel: bool) -> dict[str, Any]:
    call = _calls_schema(tools)
    key, value = (
        ("tool_calls", {"type": "array", "items": call, "minItems": 1}) if parallel else ("tool_call", call)
    )
    calling = {"type": "object", "properties": {key: value}, "required": [key], "additionalProperties": False}
    if forced:
        return calling
    answering = {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"],
                 "additionalProperties": False}  # fmt: skip
    return {"anyOf": [calling, answering]}


def _generic_instructions(tools: list[Tool], forced: bool, parallel: bool) -> str:
    listed = json.dumps([t.function.model_dump(exclude_none=True) for t in tools], indent=1)
    example = '{"name": "...", "arguments": {...}}'
    return GENERIC_INSTRUCTIONS.format(
        tools=listed,
        key="tool_calls" if parallel else "tool_call",
        example=f"[{example}, ...]" if parallel else example,
        what="tools" if parallel else "a tool",
        otherwise="" if forced else ', or {"response": "..."} to answer the user directly',
    )


def _add_system(messages: list[dict[str, Any]], text: str) -> None:
    if messages and messages[0]["role"] in ("system", "developer"):
        messages[0] = {**messages[0], "role": "system", "content": f"{messages[0]['content']}\n\n{text}"}
    else:
        messages.insert(0, {"role": "system", "content": text})


def _generic_history(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Calls and tool results written as the generic format's JSON, in roles every template knows."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            calls = [
                {"name": c.function.name, "arguments": _arguments(c.function.arguments)} for c in m.tool_calls
            ]
            body = {"tool_calls": calls} if len(calls) > 1 else {"tool_call": calls[0]}
            out.append({"role": "assistant", "content": json.dumps(body)})
        elif m.role == "tool":
            result = {
                "tool_response": {"tool_call_id": m.tool_call_id or "", "content": _arguments(m.text())}
            }
            out.append({"role": "user", "content": json.dumps(result)})
        else:
            out.append({"role": m.role, "content": m.text()})
    return out


def _native_history(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """The messages as Transformers-style templates expect them: arguments as objects."""
    out: list[dict[str, Any]] = []
    for m in messages:
        entry: dict[str, Any] = {"role": m.role, "content": m.text()}
        if m.tool_calls:
            entry["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)}}
                for c in m.tool_calls
            ]  # fmt: skip
        if m.tool_call_id:
            entry["tool_call_id"] = m.tool_call_id
        if m.name:
            entry["name"] = m.name
        out.append(entry)
    return out


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _native_grammar(fmt: ToolFormat, tools: list[Tool], parallel: bool) -> str:
    """For tool_choice required or named: the output is calls, in the template's own syntax."""
    key = "parameters" if fmt == ToolFormat.LLAMA3 else "arguments"
    call_rules = schema_grammar(_calls_schema(tools, key), "tools")
    body = call_rules.replace("root ::=", "toolcall ::=", 1)
    if fmt == ToolFormat.HERMES:
        block = '"<tool_call>\\n" toolcall "\\n</tool_call>"'
        root = f'root ::= {block} ("\\n" {block})*' if parallel else f"root ::= {block}"
    elif fmt == ToolFormat.MISTRAL:
        root = 'root ::= "[" toolcall ("," toolcall)* "]"' if parallel else 'root ::= "[" toolcall "]"'
    else:
        root = "root ::= toolcall"
    return f"{root}\n{body}"


# --- reading answers back ------------------------------------------------------------------------


def _new_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _call(obj: object, arguments_keys: tuple[str, ...] = ("arguments",)) -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    for key in arguments_keys:
        if key in obj:
            arguments = obj[key]
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            return ToolCall(_new_id(), obj["name"], text)
    return None


def _json_prefix(text: str) -> tuple[object, str] | None:
    """The JSON value at the start of ``text`` (after spaces) and what follows it."""
    stripped = text.lstrip()
    try:
        value, end = json.JSONDecoder().raw_decode(stripped)
    except ValueError:
        return None
    return value, stripped[end:]


def parse_generic(text: str) -> tuple[str | None, list[ToolCall]]:
    parsed = _json_prefix(text)
    if parsed is None or not isinstance(parsed[0], dict):
        return text, []
    obj = parsed[0]
    if "response" in obj and isinstance(obj["response"], str):
        return obj["response"], []
    raw = obj.get("tool_calls", [obj["tool_call"]] if "tool_call" in obj else [])
    calls = [c for c in (_call(item) for item in (raw if isinstance(raw, list) else [])) if c is not None]
    return (None, calls) if calls else (text, [])


_HERMES_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def parse_hermes(text: str) -> tuple[str | None, list[ToolCall]]:
    calls: list[ToolCall] = []
    for block in _HERMES_BLOCK.findall(text):
        parsed = _json_prefix(block)
        call = _call(parsed[0]) if parsed is not None else None
        if call is None:
            return text, []  # a malformed block: the answer is left as it came
        calls.append(call)
    content = _HERMES_BLOCK.sub("", text).strip()
    return (content or None, calls) if calls else (text, [])


def parse_llama3(text: str) -> tuple[str | None, list[ToolCall]]:
    body = text.strip().removeprefix("<|python_tag|>")
    calls: list[ToolCall] = []
    rest = body
    while rest.strip():
        parsed = _json_prefix(rest)
        call = _call(parsed[0], ("parameters", "arguments")) if parsed is not None else None
        if call is None or parsed is None:
            return text, []
        calls.append(call)
        rest = parsed[1].lstrip().removeprefix(";")
    return (None, calls) if calls else (text, [])


def parse_mistral(text: str) -> tuple[str | None, list[ToolCall]]:
    content, _, tail = text.partition("[TOOL_CALLS]")
    if not tail and not text.lstrip().startswith("[{"):
        return text, []
    parsed = _json_prefix(tail if tail else text)
    if parsed is None or not isinstance(parsed[0], list):
        return text, []
    calls = [c for c in (_call(item) for item in parsed[0]) if c is not None]
    if not calls:
        return text, []
    return (content.strip() or None) if tail else None, calls


PARSERS = {
    ToolFormat.GENERIC: parse_generic,
    ToolFormat.HERMES: parse_hermes,
    ToolFormat.LLAMA3: parse_llama3,
    ToolFormat.MISTRAL: parse_mistral,
}

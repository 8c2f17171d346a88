"""Tool calls read back from each template family's output (the shapes llama.cpp's chat parsers
read), and the generic format's prompt and grammar."""

from __future__ import annotations

import json

import pytest

from llamafleet.protocol.openai import ChatCompletionRequest
from nodeagent.engine.tools import (
    ToolFormat,
    detect,
    parse_generic,
    parse_hermes,
    parse_llama3,
    parse_mistral,
    plan,
)

CITY = {"city": {"type": "string", "format": "hostname"}}
TOOL = {"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": CITY, "required": ["city"]}}}  # fmt: skip


def calls(parsed: tuple[str | None, list]) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    return [(c.name, json.loads(c.arguments)) for c in parsed[1]]


@pytest.mark.parametrize(
    ("template", "fmt"),
    [("{{ '<tool_call>' }}", ToolFormat.HERMES), ("[TOOL_CALLS]", ToolFormat.MISTRAL),
     ("<|python_tag|>", ToolFormat.LLAMA3), ("Environment: ipython", ToolFormat.LLAMA3),
     ("<|im_start|>", ToolFormat.GENERIC), (None, ToolFormat.GENERIC)],
)  # fmt: skip
def test_the_format_is_the_templates_own(template: str | None, fmt: ToolFormat) -> None:
    assert detect(template) == fmt


def test_hermes_blocks_are_calls_and_the_rest_is_content() -> None:
    paris = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    rome = '{"name": "get_weather", "arguments": {"city": "Rome"}}'
    text = f"Let me check.\n<tool_call>\n{paris}\n</tool_call>\n<tool_call>{rome}</tool_call>"
    parsed = parse_hermes(text)
    assert parsed[0] == "Let me check."
    assert calls(parsed) == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    assert parse_hermes("<tool_call>{not json</tool_call>") == ("<tool_call>{not json</tool_call>", [])
    assert parse_hermes("Just words.") == ("Just words.", [])


def test_llama3_json_calls_with_or_without_the_python_tag() -> None:
    assert calls(parse_llama3('{"name": "get_weather", "parameters": {"city": "Paris"}}')) == [
        ("get_weather", {"city": "Paris"})
    ]
    two = '<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"x": 1}}'
    assert calls(parse_llama3(two)) == [("a", {}), ("b", {"x": 1})]
    assert parse_llama3("The weather is fine.") == ("The weather is fine.", [])


def test_mistral_tool_calls_list() -> None:
    parsed = parse_mistral('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]')
    assert parsed[0] is None
    assert calls(parsed) == [("get_weather", {"city": "Paris"})]
    assert calls(parse_mistral('[{"name": "f", "arguments": {}}]')) == [
        ("f", {})
    ]  # the marker is a control token
    assert parse_mistral("No tools needed.") == ("No tools needed.", [])


def test_generic_json_answers() -> None:
    assert parse_generic('{"response": "Hello!"}') == ("Hello!", [])
    assert calls(parse_generic('{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}')) == [
        ("get_weather", {"city": "Paris"})
    ]
    many = '{"tool_calls": [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"y": 2}}]}'
    assert calls(parse_generic(many)) == [("a", {}), ("b", {"y": 2})]
    cut = '{"tool_call": {"name": "get_wea'  # max_tokens ran out mid-call
    assert parse_generic(cut) == (cut, [])


def test_the_generic_plan_puts_tools_in_the_system_message_and_constrains_the_answer() -> None:
    request = ChatCompletionRequest.model_validate({"model": "m", "tools": [TOOL], "tool_choice": "required",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Paris?"},
                     {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                      "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                     {"role": "tool", "tool_call_id": "call_1", "content": "{\"c\": 18}"}]})  # fmt: skip
    made = plan(request, ToolFormat.GENERIC)
    assert made is not None
    assert made.tools is None
    system = made.messages[0]
    assert system["role"] == "system"
    assert system["content"].startswith("Be brief.\n\n")
    assert '"get_weather"' in system["content"]
    assert '{"response"' not in system["content"]  # required: calls only
    assert json.loads(made.messages[2]["content"]) == {
        "tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}
    }
    assert json.loads(made.messages[3]["content"]) == {
        "tool_response": {"tool_call_id": "call_1", "content": {"c": 18}}
    }
    assert made.messages[3]["role"] == "user"  # templates without a tool role still render it
    assert "root ::=" in made.grammar
    assert "hostname" not in made.grammar  # a format it cannot enforce is dropped, not refused


def test_native_formats_let_the_template_render_tools_and_force_calls_only_when_asked() -> None:
    base = {"model": "m", "tools": [TOOL], "messages": [{"role": "user", "content": "Paris?"}]}
    auto = plan(ChatCompletionRequest.model_validate(base), ToolFormat.HERMES)
    assert auto is not None
    assert auto.tools is not None
    assert auto.tools[0]["function"]["name"] == "get_weather"
    assert auto.grammar == ""
    forced = plan(ChatCompletionRequest.model_validate(base | {"tool_choice": "required"}), ToolFormat.HERMES)
    assert forced is not None
    assert forced.grammar.startswith('root ::= "<tool_call>\\n" toolcall "\\n</tool_call>"')
    assert (
        plan(ChatCompletionRequest.model_validate(base | {"tool_choice": "none"}), ToolFormat.HERMES) is None
    )

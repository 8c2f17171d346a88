"""Every dialect's engine routes in-process (ASGI): the real app and the dialects' real builders over a
scripted core that answers as the batching core shapes its answers (nodeagent/engine/openai_shapes.py).

What it shows without a model: each dialect's answer and stream framing (OpenAI's ``[DONE]``, named
events without it for Responses and Messages, llama-server's pieces then a final event), and that the
gateway's usage reader of each endpoint (llamafleet/protocol/) reads exactly the counts the engine's
answer carries, whole and streamed. The real model behind the same routes: the end-to-end tests in
tests/integration/test_openai_api.py (one or more per dialect)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from controlplane.gateway.usage import StreamTokens
from llamafleet.protocol.endpoint import Tokens
from llamafleet.protocol.endpoints import BY_PATH
from llamafleet.protocol.openai import ChatCompletionRequest, CompletionRequest
from nodeagent.engine.http import create_app
from nodeagent.engine.metrics import EngineMetrics
from nodeagent.engine.openai_shapes import ResponseShape
from nodeagent.engine.sequence import Usage

PROMPT, WORDS = 7, ["Hel", "lo", "!"]
USAGE = Usage(PROMPT, len(WORDS), 0)


class ScriptedCore:
    """Answers every request with the same three pieces and usage, in the batching core's shapes."""

    ready = True

    async def chat(self, request: ChatCompletionRequest) -> dict[str, Any]:
        return ResponseShape("chat", "m").whole("".join(WORDS), "stop", USAGE)

    async def complete(self, request: CompletionRequest) -> dict[str, Any]:
        return ResponseShape("text", "m").whole("".join(WORDS), "length", USAGE)

    async def _stream(self, kind: Any, request: Any) -> AsyncIterator[dict[str, Any]]:
        shape = ResponseShape(kind, "m")
        for i, word in enumerate(WORDS):
            yield shape.chunk(word, first=i == 0)
        yield shape.chunk(None, "stop")
        if request.stream_options and request.stream_options.include_usage:
            yield shape.usage_chunk(USAGE)

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[dict[str, Any]]:
        return self._stream("chat", request)

    def complete_stream(self, request: CompletionRequest) -> AsyncIterator[dict[str, Any]]:
        return self._stream("text", request)

    async def embed(self, request: Any) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [],
            "model": "m",
            "usage": {"prompt_tokens": PROMPT, "total_tokens": PROMPT},
        }

    async def rerank(self, request: Any) -> dict[str, Any] | list[Any]:
        return request.answer("m", [0.5 for _ in request.candidates()], PROMPT)  # type: ignore[no-any-return]

    def count_prompt_tokens(self, request: ChatCompletionRequest) -> int:
        return PROMPT

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return [1, 2, 3]

    def detokenize(self, tokens: list[int]) -> str:
        return "abc"

    def apply_template(self, request: ChatCompletionRequest) -> str:
        return "<prompt>"


CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
CASES = {  # path → (body, streamed stream_options), the usage the engine's answer must carry
    "/v1/chat/completions": ({**CHAT, "stream_options": {"include_usage": True}}, Tokens(PROMPT, 3)),
    "/v1/completions": ({"model": "m", "prompt": "Hi", "max_tokens": 3,
                         "stream_options": {"include_usage": True}}, Tokens(PROMPT, 3)),
    "/completion": ({"prompt": "Hi", "n_predict": 3}, Tokens(PROMPT, 3)),
    "/v1/responses": ({"model": "m", "input": "Hi", "max_output_tokens": 3}, Tokens(PROMPT, 3)),
    "/v1/messages": ({"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]},
                     Tokens(PROMPT, 3)),
}  # fmt: skip


def post(path: str, body: dict[str, Any]) -> httpx.Response:
    app = create_app(ScriptedCore(), "m", EngineMetrics(CollectorRegistry()))  # type: ignore[arg-type]

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://engine") as client:
            return await client.post(path, json=body)

    return asyncio.run(go())


@pytest.mark.parametrize("path", sorted(CASES))
def test_a_whole_answer_carries_what_the_gateway_charges(path: str) -> None:
    body, usage = CASES[path]
    answer = post(path, body)
    assert answer.status_code == 200, answer.text
    assert BY_PATH[path].usage(answer.json()) == usage


@pytest.mark.parametrize("path", sorted(CASES))
def test_a_stream_is_framed_as_its_dialect_and_charged_what_it_says(path: str) -> None:
    body, usage = CASES[path]
    answer = post(path, {**body, "stream": True})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    text = answer.text
    events = [e for e in text.split("\n\n") if e]
    named = path in ("/v1/responses", "/v1/messages")
    assert all(e.startswith("event: ") for e in events) == named, events[:2]
    assert text.endswith("data: [DONE]\n\n") == (path in ("/v1/chat/completions", "/v1/completions"))
    counter = StreamTokens(BY_PATH[path])
    counter.feed(answer.content)
    assert (counter.count, counter.total) == (usage.completion, usage.total)
    cut_short = StreamTokens(BY_PATH[path])  # the same stream without its usage: one token per piece
    cut_short.feed(b"".join(e.encode() + b"\n\n" for e in events if "usage" not in e))
    assert cut_short.count == len(WORDS)


@pytest.mark.parametrize(
    ("path", "body", "answer"),
    [
        ("/tokenize", {"content": "abc"}, {"tokens": [1, 2, 3]}),
        ("/detokenize", {"tokens": [1, 2, 3]}, {"content": "abc"}),
        ("/apply-template", CHAT, {"prompt": "<prompt>"}),
        ("/v1/chat/completions/input_tokens", CHAT, {"input_tokens": PROMPT}),
        ("/v1/messages/count_tokens", {"model": "m", "messages": CHAT["messages"]}, {"input_tokens": PROMPT}),
    ],
)
def test_endpoints_that_run_no_model_answer_and_charge_nothing(
    path: str, body: dict[str, Any], answer: dict[str, Any]
) -> None:
    got = post(path, body)
    assert got.status_code == 200, got.text
    assert got.json() == answer
    assert BY_PATH[path].usage(got.json()) is None


def test_rerank_and_embeddings_are_charged_their_prompt() -> None:
    rerank = post("/v1/rerank", {"query": "q", "documents": ["a", "b"]})
    assert BY_PATH["/v1/rerank"].usage(rerank.json()) == Tokens(PROMPT, 0)
    embeddings = post("/v1/embeddings", {"model": "m", "input": "a"})
    assert BY_PATH["/v1/embeddings"].usage(embeddings.json()) == Tokens(PROMPT, 0)


def test_bad_input_is_a_400_in_its_dialects_envelope_before_the_core_runs() -> None:
    image = [{"type": "image", "source": {}}]
    anthropic = post("/v1/messages", {"model": "m", "max_tokens": 3,
                                      "messages": [{"role": "user", "content": image}]})  # fmt: skip
    assert anthropic.status_code == 400, anthropic.text
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "invalid_request_error"
    openai = post("/v1/responses", {"model": "m", "input": "Hi", "previous_response_id": "r1"})
    assert openai.status_code == 400, openai.text
    assert set(openai.json()["error"]) == {"message", "type", "param", "code"}

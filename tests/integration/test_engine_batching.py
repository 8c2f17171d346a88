"""The batching engine as a real process on the real SmolLM2 GGUF: batching, cache, limits, cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.engine import EngineProcess, running_engine
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

STORIES = [f"Once upon a time, a {w} lived in a small town. Every day" for w in
           ("cat", "dog", "robot", "sailor", "tree", "river", "king", "clockmaker")]  # fmt: skip


@pytest.fixture(scope="module")
def engine(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    logs = tmp_path_factory.mktemp("engine")
    with running_engine(smollm2_path, logs, "--parallel-slots", "8", "--context-length", "512",
                        "--queue-limit", "4") as running:  # fmt: skip
        yield running


def _complete(client: httpx.Client, **body: object) -> dict[str, object]:
    response = client.post("/v1/completions", json={"model": "smollm2"} | body)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def _text(result: dict[str, object]) -> str:
    return str(result["choices"][0]["text"])  # type: ignore[index]


async def _concurrently(url: str, bodies: list[dict[str, object]]) -> list[dict[str, object]]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        responses = await asyncio.gather(*(client.post("/v1/completions", json=b) for b in bodies))
    return [r.json() for r in responses]


def test_eight_concurrent_greedy_requests_match_the_same_run_one_by_one(engine: EngineProcess) -> None:
    bodies: list[dict[str, object]] = [
        {"model": "smollm2", "prompt": p, "temperature": 0, "max_tokens": 24, "ignore_eos": True}
        for p in STORIES
    ]
    with engine.client() as client:
        one_by_one = [_text(_complete(client, **b)) for b in bodies]
    together = [_text(r) for r in asyncio.run(_concurrently(engine.url, bodies))]
    assert len(set(one_by_one)) == len(STORIES)  # eight different stories, not one repeated
    assert together == one_by_one


def test_a_repeated_prefix_is_served_from_the_prompt_cache(engine: EngineProcess) -> None:
    chat = {"model": "smollm2", "temperature": 0, "max_tokens": 8,
            "messages": [{"role": "system", "content": "You answer in one short sentence. " * 8},
                         {"role": "user", "content": "Name a colour."}]}  # fmt: skip
    with engine.client() as client:
        answer = client.post("/v1/chat/completions", json=chat).json()
        first = answer["usage"]
        chat["messages"] += [answer["choices"][0]["message"], {"role": "user", "content": "Another one."}]  # type: ignore[operator]
        second = client.post("/v1/chat/completions", json=chat).json()["usage"]
        metrics = client.get("/metrics").text
    # The second turn starts with the whole first prompt (and the answer); only the rest is prefilled.
    assert first["prompt_tokens_details"]["cached_tokens"] < first["prompt_tokens"]
    assert second["prompt_tokens"] > first["prompt_tokens"]
    assert second["prompt_tokens_details"]["cached_tokens"] >= first["prompt_tokens"]
    assert "llamafleet_engine_prompt_cache_hit_tokens_total" in metrics


def test_cancelling_a_stream_frees_its_slot(engine: EngineProcess) -> None:
    body = {"model": "smollm2", "prompt": STORIES[0], "max_tokens": 400, "ignore_eos": True, "stream": True}
    with engine.client() as client:
        with client.stream("POST", "/v1/completions", json=body) as response:
            lines = response.iter_lines()
            got = [line for _, line in zip(range(6), lines, strict=False) if line.startswith("data:")]
            assert got
            busy = [s for s in client.get("/slots").json() if s["state"] != "idle"]
            assert len(busy) == 1
            assert busy[0]["request"]["generated_tokens"] < 400
        wait_until(lambda: all(s["state"] == "idle" for s in client.get("/slots").json()), 10, "slot freed")
        assert 'outcome="cancelled"' in client.get("/metrics").text


def test_a_prompt_longer_than_the_slot_context_gets_400_with_the_numbers(engine: EngineProcess) -> None:
    with engine.client() as client:
        response = client.post("/v1/completions", json={"model": "smollm2", "prompt": "word " * 700})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "512" in message
    assert "tokens" in message


def test_generation_that_reaches_the_context_end_stops_with_length(engine: EngineProcess) -> None:
    prompt = "count: " + " ".join(str(i) for i in range(150))
    with engine.client() as client:
        result = _complete(client, prompt=prompt, temperature=0, max_tokens=5000, ignore_eos=True)
        assert client.get("/health").status_code == 200
    usage = result["usage"]
    assert result["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
    # Every cell of the slot holds a token, plus the last sampled one that was never decoded.
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 512 + 1  # type: ignore[index]


def test_stop_strings_end_generation_with_finish_reason_stop(engine: EngineProcess) -> None:
    with engine.client() as client:
        free = _text(_complete(client, prompt="1, 2, 3, 4,", temperature=0, max_tokens=20))
        assert " 6," in free  # the model counts on
        stopped = _complete(client, prompt="1, 2, 3, 4,", temperature=0, max_tokens=20, stop=[" 6"])
    assert _text(stopped) == free[: free.index(" 6")]
    assert stopped["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]


def test_streamed_chunks_end_with_finish_reason_and_usage(engine: EngineProcess) -> None:
    body = {"model": "smollm2", "temperature": 0, "max_tokens": 12, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Say hello."}]}  # fmt: skip
    with engine.client() as client, client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert reasons[-1] == "length"
    assert set(reasons[:-1]) == {None}
    assert chunks[-1]["usage"]["completion_tokens"] == 12


def test_seeded_sampling_repeats_and_unseeded_settings_are_validated(engine: EngineProcess) -> None:
    body = {"prompt": STORIES[1], "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
            "max_tokens": 24, "ignore_eos": True}  # fmt: skip
    with engine.client() as client:
        a = _text(_complete(client, seed=7, **body))
        b = _text(_complete(client, seed=7, **body))
        c = _text(_complete(client, seed=8, **body))
        n2 = client.post("/v1/completions", json={"model": "smollm2", "prompt": "x", "n": 2})
        bias = client.post(
            "/v1/completions", json={"model": "smollm2", "prompt": "x", "logit_bias": {"a": 1}}
        )
    assert a == b
    assert a != c
    assert n2.status_code == 200, n2.text
    assert [c["index"] for c in n2.json()["choices"]] == [0, 1]
    assert bias.status_code == 400
    assert bias.json()["error"]["param"] == "logit_bias"


def test_greedy_argmax_path_matches_llama_cpp_samplers(engine: EngineProcess) -> None:
    body = {"prompt": STORIES[3], "max_tokens": 32, "ignore_eos": True}
    with engine.client() as client:
        argmax = _text(_complete(client, temperature=0, **body))  # read straight from the logits
        native = _text(_complete(client, temperature=1.0, top_k=1, **body))  # llama.cpp's sampler chain
    assert argmax == native


def test_logit_bias_bans_a_token(engine: EngineProcess) -> None:
    with engine.client() as client:
        free = _text(_complete(client, prompt="1, 2, 3, 4,", temperature=0, max_tokens=1))
        tokens = client.post("/tokenize", json={"content": free}).json()["tokens"]
        biased = _complete(client, prompt="1, 2, 3, 4,", temperature=0, max_tokens=1,
                           logit_bias={str(tokens[0]): -100})  # fmt: skip
    assert len(tokens) == 1  # the greedy first token
    assert _text(biased) not in ("", free)


def test_queue_bound_answers_429_with_retry_after(smollm2_path: Path, tmp_path: Path) -> None:
    long = {"model": "smollm2", "prompt": STORIES[2], "max_tokens": 2000, "ignore_eos": True}

    async def scenario(url: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            running = asyncio.create_task(client.post("/v1/completions", json=long))  # takes the only slot
            waiting = asyncio.create_task(client.post("/v1/completions", json=long))  # fills the queue of 1
            try:
                for _ in range(100):
                    if "llamafleet_engine_queue_depth 1.0" in (await client.get("/metrics")).text:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the second request never queued")
                return await client.post("/v1/completions", json=long)
            finally:
                running.cancel()
                waiting.cancel()

    with running_engine(smollm2_path, tmp_path, "--parallel-slots", "1", "--queue-limit", "1") as engine:
        third = asyncio.run(scenario(engine.url))
        with engine.client() as client:
            wait_until(
                lambda: all(s["state"] == "idle" for s in client.get("/slots").json()), 10, "slots freed"
            )
    assert third.status_code == 429
    assert third.headers["retry-after"] == "1"
    assert third.json()["error"]["code"] == "queue_full"


def test_a_newcomer_copies_a_shared_system_prompt_without_evicting_its_owner(
    smollm2_path: Path, tmp_path: Path
) -> None:
    # Two slots, three chats under one system prompt, long unrelated completions in between to fill
    # the other slot. X is answered twice with the system prompt's cells cached: once kept in place in
    # the slot it takes, once copied from another slot's cells. The copy must be exact — the same
    # answer to the letter — and must leave the slot it came from intact for its own next turn.
    system = "You are the archivist of a lighthouse museum. Answer in one calm sentence. " * 4

    def chat(user: str) -> dict[str, Any]:
        return {"model": "smollm2", "temperature": 0, "max_tokens": 24, "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": user}]}  # fmt: skip

    def story(i: int) -> dict[str, Any]:
        return {"model": "smollm2", "prompt": STORIES[i], "max_tokens": 16, "ignore_eos": True}

    flags = ("--parallel-slots", "2", "--context-length", "512")
    with running_engine(smollm2_path, tmp_path, *flags) as engine, engine.client() as client:

        def ask(body: dict[str, Any], path: str = "/v1/chat/completions") -> dict[str, Any]:
            response = client.post(path, json=body)
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            return answer

        ask(chat("When was the lamp electrified?"))  # slot A, from scratch
        ask(story(4), "/v1/completions")  # slot B
        in_place = ask(chat("Who built the first lens?"))  # A (least recently used), system prompt kept
        ask(story(5), "/v1/completions")  # B
        w_body = chat("Where is the fog horn?")
        w = ask(w_body)  # A again, system prompt kept
        copied = ask(chat("Who built the first lens?"))  # B (least recently used) + A's cells copied
        w_body["messages"] += [w["choices"][0]["message"], {"role": "user", "content": "Why there?"}]
        w_next = ask(w_body)  # A: W's own slot, untouched by the copy
        metrics = client.get("/metrics").text
    system_tokens = in_place["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert system_tokens >= 60
    assert copied["usage"]["prompt_tokens_details"]["cached_tokens"] == system_tokens
    assert copied["choices"][0]["message"] == in_place["choices"][0]["message"]
    assert "llamafleet_engine_prompt_cache_copies_total 1.0" in metrics
    assert w_next["usage"]["prompt_tokens_details"]["cached_tokens"] >= w["usage"]["prompt_tokens"]

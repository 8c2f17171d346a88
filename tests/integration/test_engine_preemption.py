"""Suspending a running request for another tenant's (the gateway's x-llamafleet-preempts), on the real
engine and the real SmolLM2 GGUF: the newcomer starts at once, the suspended request resumes from its
saved cells and answers exactly what it answers uninterrupted."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamafleet.contract.engine_headers import fairness_headers
from tests.support.engine import running_engine

pytestmark = pytest.mark.integration

LONG = {"model": "smollm2", "prompt": "The history of the lighthouse began when", "temperature": 0,
        "max_tokens": 160, "ignore_eos": True}  # fmt: skip
SHORT = {
    "model": "smollm2",
    "prompt": "Name a colour:",
    "temperature": 0,
    "max_tokens": 4,
    "ignore_eos": True,
}


async def _stream(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> tuple[str, float]:
    """(the text, when its last byte came: time.monotonic())."""
    text = ""
    async with client.stream("POST", "/v1/completions", json=body | {"stream": True}, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                text += json.loads(line[6:])["choices"][0]["text"]
    return text, time.monotonic()


async def _generating(client: httpx.AsyncClient) -> None:
    """Until the one slot's request has generated a few tokens."""
    while True:
        slot = (await client.get("/slots")).json()[0]
        if slot["state"] == "generating" and slot["request"]["generated_tokens"] >= 8:
            return
        await asyncio.sleep(0.02)


async def _admitted(client: httpx.AsyncClient) -> None:
    """Until the one slot holds a request (admitted: its first step is under way)."""
    for _ in range(60_000):
        if (await client.get("/slots")).json()[0]["request"]:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no request was admitted")


def _metric(metrics: str, name: str) -> float:
    return float(next(x for x in metrics.splitlines() if x.startswith(name + " ")).split()[1])


async def _race(url: str, preempts: str) -> dict[str, Any]:
    """Tenant a's long request, then (while it generates) tenant b's short one naming ``preempts``."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        long_run = asyncio.create_task(_stream(client, LONG, fairness_headers("a", "")))
        await _generating(client)
        short_text, short_end = await _stream(client, SHORT, fairness_headers("b", preempts))
        long_text, long_end = await long_run
        return {"long": long_text, "short": short_text, "short_first": short_end < long_end,
                "metrics": (await client.get("/metrics")).text}  # fmt: skip


def test_a_suspended_request_resumes_exactly_and_the_newcomer_runs_first(
    smollm2_path: Path, tmp_path: Path
) -> None:
    flags = ("--parallel-slots", "1", "--context-length", "512")
    with running_engine(smollm2_path, tmp_path, *flags) as engine:
        waiting = asyncio.run(_race(engine.url, ""))  # no header: the newcomer waits for the slot
        stranger = asyncio.run(_race(engine.url, "c"))  # names a tenant with nothing running: waits too
        preempting = asyncio.run(_race(engine.url, "a"))
    assert not waiting["short_first"]
    assert not stranger["short_first"]
    assert preempting["short_first"]  # it ran while tenant a's request was suspended
    assert preempting["long"] == waiting["long"]  # resumed from its saved cells: the same answer
    assert preempting["short"] == waiting["short"]
    assert _metric(stranger["metrics"], "llamafleet_engine_preempted_total") == 0
    assert _metric(preempting["metrics"], "llamafleet_engine_preempted_total") == 1
    assert _metric(preempting["metrics"], "llamafleet_engine_suspended_requests") == 0


def test_a_suspended_request_cancelled_by_its_client_is_dropped(smollm2_path: Path, tmp_path: Path) -> None:
    async def suspended(client: httpx.AsyncClient) -> float:
        return _metric((await client.get("/metrics")).text, "llamafleet_engine_suspended_requests")

    async def until(client: httpx.AsyncClient, value: float) -> None:
        for _ in range(6000):  # polls /metrics; the engine has no event to wait on from outside
            if await suspended(client) == value:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"the engine never had {value} suspended requests")

    async def scenario(url: str) -> str:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            long_run = asyncio.create_task(_stream(client, LONG, fairness_headers("a", "")))
            await _generating(client)
            slow = SHORT | {"max_tokens": 120}
            short_run = asyncio.create_task(_stream(client, slow, fairness_headers("b", "a")))
            await until(client, 1)
            long_run.cancel()  # the client of the suspended request goes away
            await asyncio.gather(long_run, return_exceptions=True)
            await short_run
            await until(client, 0)
            return (await client.get("/metrics")).text

    flags = ("--parallel-slots", "1", "--context-length", "512")
    with running_engine(smollm2_path, tmp_path, *flags) as engine, engine.client() as client:
        metrics = asyncio.run(scenario(engine.url))
        after = client.post("/v1/completions", json=SHORT)
    assert _metric(metrics, "llamafleet_engine_preempted_total") == 1
    assert after.status_code == 200  # the slot serves again


def test_a_step_under_way_is_stopped_for_a_preempting_request_and_redone_exactly(
    smollm2_path: Path, tmp_path: Path
) -> None:
    # One slot prefilling ~1,800 tokens in a single step (hundreds of milliseconds on any CPU): a
    # preempting request stops that step (llama.cpp's abort callback), the step is taken back from the
    # cells and redone after the newcomer; the long request's answer is the one it gives uninterrupted.
    text = "The harbour master counted the boats that came in with the tide. " * 150
    long_prompt = {"model": "smollm2", "temperature": 0, "max_tokens": 8, "ignore_eos": True, "prompt": text}
    one_step = ("--batch-size", "2048", "--ubatch-size", "2048", "--prefill-chunk", "2048")
    flags = ("--parallel-slots", "1", "--context-length", "4096", *one_step)

    async def race(url: str) -> tuple[str, bool]:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            long_run = asyncio.create_task(_stream(client, long_prompt, fairness_headers("a", "")))
            await _admitted(client)
            _, short_end = await _stream(client, SHORT, fairness_headers("b", "a"))
            text, long_end = await long_run
            return text, short_end < long_end

    with running_engine(smollm2_path, tmp_path, *flags) as engine, engine.client() as client:
        alone = client.post("/v1/completions", json=long_prompt).json()["choices"][0]["text"]
        client.post("/v1/completions", json=SHORT | {"prompt": "Hello"})  # the slot holds something else
        stopped = 0.0
        for _ in range(3):  # the newcomer may, rarely, come after the step: try again
            text, short_first = asyncio.run(race(engine.url))
            assert text == alone
            client.post("/v1/completions", json=SHORT | {"prompt": "Hello"})
            stopped = _metric(client.get("/metrics").text, "llamafleet_engine_decode_steps_stopped_total")
            if stopped:
                break
    assert stopped >= 1
    assert short_first

"""LoRA adapters hot-swapped on a running engine, and embeddings, on the real SmolLM2 GGUF."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.engine import EngineProcess, running_engine
from tests.support.lora import write_lora

pytestmark = pytest.mark.integration

PROMPT = {"prompt": "The capital of France is", "temperature": 0, "max_tokens": 12, "ignore_eos": True}


@pytest.fixture(scope="module")
def adapter_path(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lora(smollm2_path, tmp_path_factory.mktemp("lora") / "noisy.gguf")


@pytest.fixture(scope="module")
def engine(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    with running_engine(smollm2_path, tmp_path_factory.mktemp("engine"), "--embeddings") as running:
        yield running


def _text(client: httpx.Client, model: str, **extra: object) -> str:
    response = client.post("/v1/completions", json={"model": model} | PROMPT | extra)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


def test_adapter_load_select_list_and_unload(engine: EngineProcess, adapter_path: Path) -> None:
    with engine.client() as client:
        base = _text(client, "smollm2")
        loaded = client.post("/adapters", json={"name": "noisy", "path": str(adapter_path)})
        assert loaded.status_code == 200, loaded.text
        assert [a["name"] for a in client.get("/adapters").json()["data"]] == ["noisy"]
        assert client.get("/health").json()["adapters"] == ["noisy"]

        with_adapter = _text(client, "smollm2:noisy")
        at_zero = _text(client, "smollm2", lora=[{"name": "noisy", "scale": 0.0}])
        base_again = _text(client, "smollm2")
        assert with_adapter != base  # the adapter changes what the model says
        assert at_zero == base  # and at scale 0 it is the base model
        assert base_again == base  # and it does not leak into requests that did not ask for it

        assert client.delete("/adapters/noisy").status_code == 200
        gone = client.post("/v1/completions", json={"model": "smollm2:noisy"} | PROMPT)
        assert client.get("/adapters").json()["data"] == []
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "model_not_found"


def test_requests_with_and_without_an_adapter_interleave(engine: EngineProcess, adapter_path: Path) -> None:
    with engine.client() as client:
        client.post("/adapters", json={"name": "mixed", "path": str(adapter_path)}).raise_for_status()
        alone = [_text(client, "smollm2"), _text(client, "smollm2:mixed")]

    async def together() -> list[str]:
        async with httpx.AsyncClient(base_url=engine.url, timeout=120) as client:
            bodies = [{"model": m} | PROMPT for m in ("smollm2", "smollm2:mixed") * 2]
            responses = await asyncio.gather(*(client.post("/v1/completions", json=b) for b in bodies))
        return [r.json()["choices"][0]["text"] for r in responses]

    base_1, tuned_1, base_2, tuned_2 = asyncio.run(together())
    # Adapter sets never share a decode step: base requests running beside adapter requests are
    # exactly the base model, and adapter requests are not.
    assert base_1 == base_2 == alone[0]
    assert alone[0] not in (tuned_1, tuned_2)
    # The random adapter flattens the distribution until top logits nearly tie, so batch-size
    # rounding may flip a late greedy pick: compare the adapter texts' opening only.
    assert tuned_1[:8] == tuned_2[:8] == alone[1][:8]
    with engine.client() as client:
        client.delete("/adapters/mixed").raise_for_status()


def test_a_request_cancelled_while_queued_gives_its_adapter_back(
    smollm2_path: Path, adapter_path: Path, tmp_path: Path
) -> None:
    long = {"prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True}

    async def scenario(url: str) -> tuple[int, int]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            loaded = await client.post("/adapters", json={"name": "queued", "path": str(adapter_path)})
            loaded.raise_for_status()
            running = asyncio.create_task(client.post("/v1/completions", json={"model": "smollm2"} | long))
            waiting = asyncio.create_task(
                client.post("/v1/completions", json={"model": "smollm2:queued"} | long)
            )
            try:
                for _ in range(100):
                    if "llamafleet_engine_queue_depth 1.0" in (await client.get("/metrics")).text:
                        break
                    await asyncio.sleep(0.1)
                in_use_queued = (await client.get("/adapters")).json()["data"][0]["in_use"]
                waiting.cancel()  # the client goes away while its request waits for the slot
                for _ in range(100):
                    in_use_after = (await client.get("/adapters")).json()["data"][0]["in_use"]
                    if in_use_after == 0:
                        break
                    await asyncio.sleep(0.1)
                return in_use_queued, in_use_after
            finally:
                running.cancel()
                waiting.cancel()

    with running_engine(smollm2_path, tmp_path, "--parallel-slots", "1") as engine:
        in_use_queued, in_use_after = asyncio.run(scenario(engine.url))
    assert in_use_queued == 1
    assert in_use_after == 0  # unloading it later would free it at once


def test_an_adapter_in_use_unloads_when_its_request_ends(
    smollm2_path: Path, adapter_path: Path, tmp_path: Path
) -> None:
    load = {"name": "busy", "path": str(adapter_path)}
    long = {"model": "smollm2:busy", "prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True}

    async def scenario(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            (await client.post("/adapters", json=load)).raise_for_status()
            running = asyncio.create_task(client.post("/v1/completions", json=long))
            try:
                for _ in range(100):
                    if (await client.get("/adapters")).json()["data"][0]["in_use"] == 1:
                        break
                    await asyncio.sleep(0.1)
                unloaded = await client.delete("/adapters/busy")
                reloaded_early = await client.post("/adapters", json=load)
            finally:
                running.cancel()
            for _ in range(100):
                reloaded = await client.post("/adapters", json=load)
                if reloaded.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            return [unloaded.status_code, reloaded_early.status_code, reloaded.status_code]

    with running_engine(smollm2_path, tmp_path, "--parallel-slots", "1") as engine:
        # Unloading hides it at once; the same name loads again once its last request is gone.
        assert asyncio.run(scenario(engine.url)) == [200, 400, 200]


def test_a_file_that_is_not_an_adapter_is_refused_and_the_engine_keeps_serving(
    engine: EngineProcess, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with engine.client() as client:
        bad = client.post("/adapters", json={"name": "junk", "path": str(junk)})
        missing = client.post("/adapters", json={"name": "missing", "path": str(tmp_path / "nope.gguf")})
        assert _text(client, "smollm2")
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "path"
    assert missing.status_code == 400
    assert "does not exist" in missing.json()["error"]["message"]


def test_embeddings_have_the_model_dimension_and_repeat(engine: EngineProcess) -> None:
    with engine.client() as client:
        response = client.post(
            "/v1/embeddings", json={"model": "smollm2", "input": ["a red apple", "a red apple", "tax law"]}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    vectors = [np.array(d["embedding"]) for d in body["data"]]
    assert [len(v) for v in vectors] == [576, 576, 576]  # SmolLM2-135M's n_embd
    # Identical inputs in one batch sit in different rows, which llama.cpp's CPU kernels may sum
    # in a different order: equal to float32 rounding (seen: 4e-9), not necessarily bit for bit.
    assert np.allclose(vectors[0], vectors[1], rtol=0, atol=1e-6)
    assert not np.allclose(vectors[0], vectors[2])
    assert np.isclose(np.linalg.norm(vectors[0]), 1.0, atol=1e-5)
    assert body["usage"]["prompt_tokens"] > 0
    with engine.client() as client:
        alone = client.post("/v1/embeddings", json={"model": "smollm2", "input": "tax law"}).json()
    # Batched with inputs of other lengths, an input embeds as it does on its own.
    assert np.allclose(vectors[2], alone["data"][0]["embedding"], atol=1e-4)


def test_embeddings_need_a_model_served_for_them(smollm2_path: Path, tmp_path: Path) -> None:
    with running_engine(smollm2_path, tmp_path) as engine, engine.client() as client:
        response = client.post("/v1/embeddings", json={"model": "smollm2", "input": "hello"})
    assert response.status_code == 400
    assert "embeddings" in response.json()["error"]["message"]

"""The Gateway API Inference Extension's model-server metrics on the real engine and SmolLM2 GGUF:
exactly the series GIE's endpoint picker reads, with values that agree with /slots under load."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.engine import running_engine
from tests.support.lora import write_lora

pytestmark = pytest.mark.integration

GIE_SERIES = {
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:lora_requests_info",
}
LONG = {"model": "smollm2", "prompt": "The history of the lighthouse began when", "temperature": 0,
        "max_tokens": 200, "ignore_eos": True}  # fmt: skip


def scrape(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every series by family name: (labels, value)."""
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


def gie(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    ((labels, value),) = metrics[name]
    assert labels == {"model_name": "smollm2"}
    return value


def cells(metrics: dict[str, list[tuple[dict[str, str], float]]]) -> float:
    ((_, value),) = metrics["llamafleet_engine_kv_cells"]
    return value


async def _until(client: httpx.AsyncClient, check: Any, what: str) -> dict[str, Any]:
    for _ in range(6000):  # the engine has no event to wait on from outside: poll
        metrics = scrape((await client.get("/metrics")).text)
        if check(metrics):
            return metrics
        await asyncio.sleep(0.02)
    raise AssertionError(f"the engine never had {what}")


async def scenario(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        idle = scrape((await client.get("/metrics")).text)
        running = [
            asyncio.create_task(client.post("/v1/completions", json=LONG | {"seed": i})) for i in range(2)
        ]
        await _until(client, lambda m: gie(m, "vllm:num_requests_running") == 2, "two requests running")
        queued = [
            asyncio.create_task(client.post("/v1/completions", json=LONG | {"max_tokens": 2})),
            asyncio.create_task(client.post("/v1/completions", json=LONG | {"model": "smollm2:noisy"})),
        ]
        await _until(client, lambda m: gie(m, "vllm:num_requests_waiting") == 2, "two requests waiting")
        before = (await client.get("/slots")).json()
        loaded = scrape((await client.get("/metrics")).text)
        after = (await client.get("/slots")).json()
        for task in [*running, *queued]:
            assert (await task).status_code == 200
        done = await _until(client, lambda m: gie(m, "vllm:num_requests_running") == 0, "all done")
        return {"idle": idle, "before": before, "loaded": loaded, "after": after, "done": done,
                "done_slots": (await client.get("/slots")).json()}  # fmt: skip


def test_engines_export_the_gie_model_server_metrics_and_they_agree_with_slots(
    smollm2_path: Path, tmp_path: Path
) -> None:
    adapter = write_lora(smollm2_path, tmp_path / "noisy.gguf")
    flags = ("--parallel-slots", "2", "--context-length", "512", "--adapters", f"noisy={adapter}")
    with running_engine(smollm2_path, tmp_path, *flags) as engine:
        seen = asyncio.run(scenario(engine.url))
    idle, loaded, done = seen["idle"], seen["loaded"], seen["done"]
    assert {name for name in loaded if name.startswith("vllm:")} == GIE_SERIES  # exactly those
    assert gie(idle, "vllm:num_requests_running") == gie(idle, "vllm:num_requests_waiting") == 0
    assert gie(idle, "vllm:kv_cache_usage_perc") == 0
    # Under load: both slots running (as /slots says), the two queued waiting, one for the adapter.
    for slots in (seen["before"], seen["after"]):
        assert (
            sum(1 for slot in slots if slot["state"] != "idle")
            == gie(loaded, "vllm:num_requests_running")
            == 2
        )
    assert gie(loaded, "vllm:num_requests_waiting") == 2
    ((lora, stamp),) = loaded["vllm:lora_requests_info"]
    assert lora == {"max_lora": "1", "running_lora_adapters": "noisy", "waiting_lora_adapters": "noisy"}
    assert stamp > 1.7e9  # when it was read: the picker takes the latest
    # KV use as a fraction of all cells, between what /slots said just before and just after (the
    # metric is the last step's: a step may have ended between the reads).
    use = gie(loaded, "vllm:kv_cache_usage_perc")
    assert use == gie(loaded, "vllm:gpu_cache_usage_perc")
    held = [sum(slot["cached_tokens"] for slot in seen[when]) / cells(loaded) for when in ("before", "after")]
    slack = 2 * 2 / cells(loaded)  # a step: a token per slot, two slots (no speculation by default)
    assert 0 < held[0] - slack <= use <= held[1] + slack < 1
    # Idle again: nothing running or waiting, and the cells the slots keep cached are still in use.
    assert gie(done, "vllm:num_requests_waiting") == 0
    kept = sum(slot["cached_tokens"] for slot in seen["done_slots"])
    assert kept > 0
    assert gie(done, "vllm:kv_cache_usage_perc") == pytest.approx(kept / cells(done))
    ((lora, _),) = done["vllm:lora_requests_info"]
    assert lora["waiting_lora_adapters"] == ""

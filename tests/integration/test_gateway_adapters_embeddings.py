"""Through the whole cluster: LoRA adapters from the models file appear as base:adapter, embeddings, usage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import oneshot
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.lora import write_lora
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    adapter = write_lora(smollm2_path, tmp / "tone.gguf")
    models = f"""
models:
  - name: smol
    source: builtin:smollm2-135m
    contextLength: 1024
    parallelSlots: 2
    embeddings: true
    adapters:
      - name: tone
        path: {adapter}
  - name: smol-ranker
    source: builtin:smollm2-135m
    contextLength: 512
    parallelSlots: 2
    embeddings: true
    pooling: rank
    cacheRam: 0
"""
    running = start_cluster(tmp, models, ["smol", "smol-ranker"])
    yield running
    stop_cluster(running)


def test_adapters_are_listed_and_routed_as_base_colon_adapter(cluster: Cluster) -> None:
    def listed() -> bool:
        ids = [m["id"] for m in oneshot.get(f"{cluster.base_url}/v1/models").json()["data"]]
        return ids == ["smol", "smol:tone", "smol-ranker"]

    wait_until(listed, 30, "smol:tone in /v1/models")  # reported by the agent's next health check
    body = {"prompt": "The capital of France is", "temperature": 0, "max_tokens": 10, "ignore_eos": True}
    base = oneshot.post(f"{cluster.base_url}/v1/completions", json={"model": "smol"} | body, timeout=60)
    tuned = oneshot.post(f"{cluster.base_url}/v1/completions", json={"model": "smol:tone"} | body, timeout=60)
    unknown = oneshot.post(
        f"{cluster.base_url}/v1/completions", json={"model": "smol:nope"} | body, timeout=60
    )
    assert base.status_code == tuned.status_code == 200
    assert tuned.json()["choices"][0]["text"] != base.json()["choices"][0]["text"]
    assert unknown.status_code == 404


def test_a_model_with_rank_pooling_reranks_through_the_gateway(cluster: Cluster) -> None:
    ask = {"query": "capital of France", "documents": ["Paris", "bananas", "Berlin"], "top_n": 2}
    ranked = oneshot.post(f"{cluster.base_url}/v1/rerank", json={"model": "smol-ranker"} | ask, timeout=60)
    assert ranked.status_code == 200, ranked.text
    scores = [r["relevance_score"] for r in ranked.json()["results"]]
    assert len(scores) == 2
    assert scores == sorted(scores, reverse=True)
    pooled = oneshot.post(f"{cluster.base_url}/v1/rerank", json={"model": "smol"} | ask, timeout=60)
    assert pooled.status_code == 400  # mean pooling: an embedding model, not a reranker


def test_embeddings_and_cached_tokens_pass_through_the_gateway(cluster: Cluster) -> None:
    embedded = oneshot.post(
        f"{cluster.base_url}/v1/embeddings", json={"model": "smol", "input": ["hi", "yo"]}
    )
    assert embedded.status_code == 200, embedded.text
    assert [len(d["embedding"]) for d in embedded.json()["data"]] == [576, 576]

    chat = {"model": "smol", "max_tokens": 4, "messages": [{"role": "user", "content": "Tell me a joke."}]}
    oneshot.post(f"{cluster.base_url}/v1/chat/completions", json=chat, timeout=60).raise_for_status()
    again = oneshot.post(f"{cluster.base_url}/v1/chat/completions", json=chat, timeout=60).json()
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == again["usage"]["prompt_tokens"] - 1


def test_runtime_adapters_and_slots_through_the_gateway(cluster: Cluster, smollm2_path: Path) -> None:
    folder = cluster.tmp / "agent" / "adapters"  # the node's adapter folder (DATA_DIR/adapters)
    folder.mkdir(parents=True, exist_ok=True)
    lora = write_lora(smollm2_path, folder / "late.gguf", seed=3)
    base = f"{cluster.base_url}/v1/replicas/smol"
    loaded = oneshot.post(f"{base}/adapters", json={"name": "late", "path": str(lora)}, timeout=60)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["data"][0]["result"]["name"] == "late"

    def listed() -> bool:
        return "smol:late" in [m["id"] for m in oneshot.get(f"{cluster.base_url}/v1/models").json()["data"]]

    wait_until(listed, 30, "smol:late in /v1/models")
    body = {"model": "smol:late", "prompt": "Hello", "max_tokens": 3}
    assert oneshot.post(f"{cluster.base_url}/v1/completions", json=body, timeout=60).status_code == 200
    slots = oneshot.get(f"{base}/slots").json()["data"][0]["result"]
    assert len(slots) == 2
    assert {"id", "state", "cached_tokens", "request"} <= set(slots[0])
    missing = oneshot.post(f"{base}/adapters", json={"name": "x", "path": "nonexistent.gguf"}, timeout=60)
    assert missing.status_code == 400
    elsewhere = oneshot.post(f"{base}/adapters", json={"name": "x", "path": "/etc/passwd"}, timeout=60)
    assert elsewhere.status_code == 403
    assert oneshot.delete(f"{base}/adapters/late", timeout=60).status_code == 200
    assert oneshot.get(f"{cluster.base_url}/v1/replicas/nope/slots").status_code == 404


def test_each_engine_starts_with_its_models_cache_ram(cluster: Cluster) -> None:
    """A Model's cacheRam is its engines' --cache-ram (a reranker's prompts are not continued: 0 keeps
    none); a Model without it gets the default."""
    logs = {p.stem: p.read_text() for p in (cluster.tmp / "agent" / "logs").glob("*.log")}
    starts = {name.rsplit("-", 1)[0]: text.split(" starting: ", 1)[1].split("\n", 1)[0]
              for name, text in logs.items()}  # fmt: skip
    assert set(starts) == {"smol", "smol-ranker"}, starts
    assert " --cache-ram 1024" in starts["smol"]
    assert " --cache-ram 0" in starts["smol-ranker"]

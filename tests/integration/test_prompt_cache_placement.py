"""An engine's prompt cache (a Model's cacheRam) through a running cluster: placement counts its cap,
and the agent keeps the part a running engine's cache has not filled yet out of what it offers, so
a node is not filled with replicas whose caches would then push it out of memory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

# One node offering 1.6 GiB to its engines. Each SmolLM2 replica here takes ~0.2 GiB of its own (weights
# shared between replicas of the file) and, with the default cacheRam, 1 GiB more as its cache fills:
# one such replica fits, two do not. Without the cache counted, all three would be placed.
MODELS = """
models:
  - name: chat-a
    source: builtin:smollm2-135m
    contextLength: 512
    parallelSlots: 1
    threads: 1
    shareCpus: true
  - name: chat-b
    source: builtin:smollm2-135m
    contextLength: 512
    parallelSlots: 1
    threads: 1
    shareCpus: true
  - name: no-cache
    source: builtin:smollm2-135m
    contextLength: 512
    parallelSlots: 1
    threads: 1
    shareCpus: true
    cacheRam: 0
"""


def _placed(cluster: Cluster) -> dict[str, tuple[str, str]]:
    """Model → (its Placed condition's status, message)."""
    out = {}
    for model in cluster.models_json():
        conditions = model["conditions"]
        assert isinstance(conditions, list)
        placed = next(c for c in conditions if c["type"] == "Placed")
        out[str(model["name"])] = (placed["status"], placed["message"])
    return out


def test_a_node_takes_one_cached_replica_and_a_cacheless_one_but_not_a_second_cache(tmp_path: Path) -> None:
    cluster = start_cluster(
        tmp_path, MODELS, ["no-cache"], extra_args=("--agent-allocatable-memory", "1.6GiB")
    )
    try:
        wait_until(
            lambda: sum(_placed(cluster)[m][0] == "True" for m in ("chat-a", "chat-b")) == 1,
            60, "one of the two cached models to be placed",
        )  # fmt: skip
        time.sleep(3)  # a few status rounds after both engines run: the refusal is not a passing state
        placed = _placed(cluster)
        assert placed["no-cache"][0] == "True", placed
        refused = [m for m in ("chat-a", "chat-b") if placed[m][0] == "False"]
        assert len(refused) == 1, placed
        assert "of it the prompt cache (cacheRam)" in placed[refused[0]][1], placed
    finally:
        stop_cluster(cluster)

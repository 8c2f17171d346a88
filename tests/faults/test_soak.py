"""A short soak (the full one is bench/soak.py): mixed requests from many clients, some cancelled
midway, against two replicas; only clean outcomes, and nothing leaked afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.faults.soak import idle_check, soak
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

MODELS = """
models:
  - name: smollm2-135m
    source: builtin:smollm2-135m
    replicas: 2
    parallelSlots: 4
    embeddings: true
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = start_cluster(tmp_path, MODELS, ["smollm2-135m"])
    yield running
    stop_cluster(running)


def engine_urls(cluster: Cluster) -> list[str]:
    (model,) = cluster.models_json()
    replicas: list[dict[str, Any]] = model["replicas"]  # type: ignore[assignment]
    return [r["endpoint"] for r in replicas if r["endpoint"]]


def gateway_in_flight(cluster: Cluster) -> float:
    lines = httpx.get(f"{cluster.base_url}/metrics", timeout=10).text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith("llamafleet_gateway_in_flight{"))


def test_a_short_soak_gives_only_clean_outcomes_and_leaks_nothing(cluster: Cluster) -> None:
    wait_until(lambda: len(engine_urls(cluster)) == 2, 60, "both replicas")
    result = asyncio.run(soak(cluster.base_url, "smollm2-135m", clients=16, seconds=8))
    summary = result.summary()
    assert summary["requests"] > 0, summary  # how many depends on this machine's speed: not asserted
    assert result.errors() == {}, (summary, result.failures)
    assert any(k.endswith(":cancelled") for k in result.outcomes)  # cancellations were exercised
    assert any(k.startswith("embeddings:200") for k in result.outcomes)

    def drained() -> bool:
        return all(h["slots_idle"] == h["slots_total"] for h in idle_check(engine_urls(cluster)))

    wait_until(drained, 20, "every engine slot to be idle again (a cancelled stream must free its slot)")
    wait_until(lambda: gateway_in_flight(cluster) == 0, 20, "the gateway's in-flight counts to return to 0")

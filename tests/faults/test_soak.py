"""A short soak (the full one is bench/soak.py): mixed requests from many clients, some cancelled
midway, against two replicas; only clean outcomes, and nothing leaked afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.soak import MODELS, engine_urls, gateway_in_flight, idle_check, soak
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = start_cluster(tmp_path, MODELS, ["smollm2-135m"])
    yield running
    stop_cluster(running)


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

"""Faults under a steady client load on a cluster with two replicas and its balancer state in Redis:
a killed engine, a stopped engine, a killed Redis. Each states what clients may see meanwhile."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import oneshot
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.load import Outcomes, steady_load
from tests.support.processes import engine_pids
from tests.support.redis_server import RedisUrl, redis_server
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

MODELS = """
models:
  - name: smollm2-135m
    source: builtin:smollm2-135m
    replicas: 2
    parallelSlots: 2
"""
# Clean refusals a client can act on: a 502 for a request whose engine died under it, or a
# 503/429 with Retry-After. Never a 500, a hang, or a dropped connection to the gateway.
CLEAN = {"ok", "502", "503+retry-after", "429+retry-after"}


@pytest.fixture(scope="module")
def redis_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("redis")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, redis_dir: Path) -> Iterator[tuple[Cluster, RedisUrl]]:
    with redis_server(redis_dir) as url:
        running = start_cluster(tmp_path_factory.mktemp("faults"), MODELS, ["smollm2-135m"],
                                ("--gateway-redis-url", url))  # fmt: skip
        try:
            wait_until(lambda: len(engine_pids(running)) == 2, 60, "two engines")
            yield running, url
        finally:
            stop_cluster(running)


def check(outcomes: Outcomes, allowed: set[str]) -> None:
    assert outcomes.counts["ok"] > 10, outcomes.counts
    assert set(outcomes.counts) <= allowed, (outcomes.counts, outcomes.failures)


def test_a_killed_engine_costs_at_most_its_requests_in_flight(cluster: tuple[Cluster, RedisUrl]) -> None:
    running, _ = cluster
    victim = next(iter(engine_pids(running).values()))
    with steady_load(running.base_url, "smollm2-135m", clients=3) as outcomes:
        outcomes.served(6)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in engine_pids(running).values() and len(engine_pids(running)) == 2,
                   60, "the engine to be restarted")  # fmt: skip
        outcomes.served(6, at_least=11)
    check(outcomes, CLEAN)
    assert outcomes.counts["502"] <= 2 * 3  # only what was on the killed engine (2 slots)


def test_a_stopped_engine_is_replaced_and_no_request_hangs(cluster: tuple[Cluster, RedisUrl]) -> None:
    running, _ = cluster
    victim = next(iter(engine_pids(running).values()))
    started = time.monotonic()
    with steady_load(running.base_url, "smollm2-135m", clients=3) as outcomes:
        outcomes.served(6)
        os.kill(victim, signal.SIGSTOP)
        wait_until(lambda: victim not in engine_pids(running).values() and len(engine_pids(running)) == 2,
                   60, "the stopped engine to be replaced")  # fmt: skip
        outcomes.served(6, at_least=11)
    check(outcomes, CLEAN)
    assert time.monotonic() - started < 90  # the load's requests all ended: none hung


def redis_up(cluster: Cluster) -> float:
    for line in oneshot.get(f"{cluster.base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith("llamafleet_gateway_redis_up "):
            return float(line.split()[1])
    return -1.0


def test_without_redis_the_gateway_keeps_serving_and_shares_again_when_it_returns(
    cluster: tuple[Cluster, RedisUrl], redis_dir: Path
) -> None:
    running, redis = cluster
    with steady_load(running.base_url, "smollm2-135m", clients=3) as outcomes:
        outcomes.served(3)
        os.kill(redis.pid, signal.SIGKILL)  # this test's Redis, by its pid
        wait_until(lambda: redis_up(running) == 0, 20, "the gateway to notice Redis is gone")
        outcomes.served(6)  # balancing on its own counts meanwhile
        with redis_server(redis_dir, redis.port):  # Redis comes back, empty
            wait_until(lambda: redis_up(running) == 1, 30, "the gateway to share its state again")
            outcomes.served(6, at_least=11)
    check(outcomes, {"ok"})  # meanwhile it balanced on its own counts: nothing failed

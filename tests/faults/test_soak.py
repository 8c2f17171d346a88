"""Two minutes of the soak (the hour is bench/soak.py): 32 clients mixing chat, streams (a quarter
cancelled midway), completions and embeddings against two replicas; only clean outcomes, and
nothing left behind — every slot idle, no gateway in-flight count, and each process's open files
and threads back near where they were (a leak of one per request would be hundreds here)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.soak import (
    MODELS,
    Sampler,
    engine_urls,
    gateway_in_flight,
    idle_check,
    processes,
    soak,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

SECONDS = 120
FD_SLACK = 32  # pooled and half-closed connections that may still be open when read
THREAD_SLACK = 16  # worker pools that grow with load and keep their threads


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = start_cluster(tmp_path, MODELS, ["smollm2-135m"])
    yield running
    stop_cluster(running)


def _counts(pid: int) -> tuple[int, int]:
    proc = psutil.Process(pid)
    with proc.oneshot():
        return proc.num_fds(), proc.num_threads()


def test_two_minutes_of_soak_give_only_clean_outcomes_and_leak_nothing(cluster: Cluster) -> None:
    wait_until(lambda: len(engine_urls(cluster)) == 2, 60, "both replicas")
    asyncio.run(soak(cluster.base_url, "smollm2-135m", clients=4, seconds=3))  # each path once
    pids = processes(cluster.process.pid)
    assert len(pids) >= 3, pids  # up (control plane, gateway and agent), two engines
    before = {pid: _counts(pid) for pid in pids}
    sampler = Sampler(pids, every_s=5)
    sampler.start()
    try:
        result = asyncio.run(soak(cluster.base_url, "smollm2-135m", clients=32, seconds=SECONDS))
    finally:
        sampler.stop()
    summary = result.summary()
    assert summary["requests"] > 0, summary  # how many depends on this machine's speed: not asserted
    assert result.errors() == {}, (summary, result.failures)
    assert any(k.endswith(":cancelled") for k in result.outcomes)  # cancellations were exercised
    assert any(k.startswith("embeddings:200") for k in result.outcomes)

    def drained() -> bool:
        return all(h["slots_idle"] == h["slots_total"] for h in idle_check(engine_urls(cluster)))

    wait_until(drained, 20, "every engine slot to be idle again (a cancelled stream must free its slot)")
    wait_until(lambda: gateway_in_flight(cluster) == 0, 20, "the gateway's in-flight counts to return to 0")

    # Threads: against the most any process had in the soak's first half (its pools grown by then).
    half = {
        pid: max((row[3] for row in rows if row[0] <= SECONDS / 2), default=before[pid][1])
        for pid, rows in sampler.samples.items()
    }
    leftover: dict[int, tuple[int, int]] = {}

    def settled() -> bool:
        leftover.clear()
        for pid in pids:
            fds, threads = _counts(pid)
            if fds > before[pid][0] + FD_SLACK or threads > max(before[pid][1], half[pid]) + THREAD_SLACK:
                leftover[pid] = (fds, threads)
        return not leftover

    wait_until(
        settled,
        60,
        "open files and threads back near their start",
        on_timeout=lambda: f"now {leftover}, before {before}, {summary['requests']} requests",
    )

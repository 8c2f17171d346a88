"""Killing the engine: the agent restarts it; meanwhile requests get 503 with Retry-After, never a hang."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support import oneshot
from tests.support.cluster import SMOLLM2_YAML, Cluster, start_cluster, stop_cluster
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}


def engine_of(cluster: Cluster) -> psutil.Process:
    children = psutil.Process(cluster.process.pid).children(recursive=True)
    engines = [p for p in children if "nodeagent.engine" in " ".join(p.cmdline())]
    assert len(engines) == 1, engines
    return engines[0]


def replica_phase(cluster: Cluster) -> str:
    (model,) = cluster.models_json()
    (replica,) = model["replicas"]  # type: ignore[misc]
    return str(replica["phase"])  # type: ignore[index]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A restart backoff of 4 s (1 s in the other tests' clusters): the restart stays visible to the
    status CLI this test reads, however busy the machine."""
    backoff = ("--agent-supervisor-restart-backoff-initial-s", "4")
    running = start_cluster(tmp_path, SMOLLM2_YAML, ["smollm2-135m"], backoff)
    yield running
    stop_cluster(running)


def test_killed_engine_is_restarted_and_requests_get_503_meanwhile(cluster: Cluster) -> None:
    url = f"{cluster.base_url}/v1/chat/completions"
    assert oneshot.post(url, json=CHAT, timeout=30).status_code == 200
    victim = engine_of(cluster)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)

    # While the replica is down, every answer is a fast 503 with Retry-After (or a 200 once it is back).
    saw_503 = False
    phases = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = time.monotonic()
        response = oneshot.post(url, json=CHAT, timeout=30)
        phases.add(replica_phase(cluster))
        assert time.monotonic() - started < 10, "a request hung while the engine was down"
        if response.status_code == 503:
            saw_503 = True
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["type"] == "server_error"
            continue
        assert response.status_code == 200, response.text
        if saw_503:
            break
        time.sleep(0.05)
    assert saw_503, "expected 503s while the engine was restarting"
    assert phases & {"restarting", "starting"}, phases
    assert replica_phase(cluster) == "ready"
    (model,) = cluster.models_json()
    assert model["replicas"][0]["restarts"] >= 1  # type: ignore[index]
    assert engine_of(cluster).pid != victim.pid
    wait_until(lambda: "engine exited (killed by SIGKILL)" in cluster.log(), 10, "the crash to be logged")

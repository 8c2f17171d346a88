"""Processes killed under a steady client load, each with what clients may see meanwhile:
- the agent of the node serving the model: its engines die with it; after the node grace period
  the replica is placed on the other node; meanwhile only clean refusals (503 + Retry-After, or
  502 for what was in flight); when the agent comes back it runs no duplicate;
- the gateway mid-stream: that client's connection drops (nothing can carry it), the engine frees
  the slot, and a restarted gateway serves at once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support import oneshot
from tests.support.load import steady_load
from tests.support.process_cluster import MODEL, engine_endpoint, processes
from tests.support.processes import Proc, agent_args, engine_pids
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

CLEAN = {"ok", "502", "503+retry-after", "429+retry-after"}


def test_a_killed_agent_s_replica_moves_after_the_grace_period_and_comes_back_without_duplicates(
    tmp_path: Path,
) -> None:
    with processes(tmp_path, ("node-a", "node-b"), "--node-grace-s", "3") as cluster:
        wait_until(lambda: bool(cluster.serving_on()), 120, "the replica to serve")
        lost = cluster.serving_on()
        other = next(n for n in cluster.agents if n != lost)
        with steady_load(cluster.base, MODEL) as outcomes:
            outcomes.served(3)
            cluster.agents[lost].stop(signal.SIGKILL)
            wait_until(lambda: cluster.serving_on() == other, 120, "the replica on the other node",
                       on_timeout=lambda: cluster.controlplane.log()[-3000:])  # fmt: skip
            outcomes.served(3, at_least=6)
        assert outcomes.counts["ok"] > 5, outcomes.counts
        assert set(outcomes.counts) <= CLEAN, (outcomes.counts, outcomes.failures)
        # The node comes back: the replica stays where it is, nothing runs twice.
        back = Proc(lost, agent_args(tmp_path, cluster.address, lost), tmp_path / f"{lost}-2.log").start()
        cluster.agents[lost] = back
        wait_until(lambda: "connected to the control plane" in back.log(), 60, "the agent to reconnect")
        time.sleep(3)
        assert not engine_pids(back)
        assert cluster.ready_replicas() == 1


def test_a_killed_gateway_drops_its_streams_but_no_slot_and_a_new_one_serves(tmp_path: Path) -> None:
    with processes(tmp_path, ("node-a",)) as cluster:
        wait_until(lambda: bool(cluster.serving_on()), 120, "the replica to serve")
        engine = engine_endpoint(cluster.address, cluster.tmp).url
        body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True,
                "stream": True}  # fmt: skip
        dropped = False
        with oneshot.stream("POST", f"{cluster.base}/v1/completions", json=body, timeout=60) as response:
            try:
                for n, _line in enumerate(response.iter_lines()):
                    if n == 5:
                        busy = oneshot.get(f"{engine}/health", timeout=5).json()
                        assert busy["slots_idle"] < busy["slots_total"]  # the stream holds a slot
                        cluster.gateway.stop(signal.SIGKILL)
            except httpx.HTTPError:
                dropped = True
        assert dropped  # the client sees its connection end: nothing could have carried it on

        def slot_freed() -> bool:
            health = oneshot.get(f"{engine}/health", timeout=5).json()
            return bool(health["slots_idle"] == health["slots_total"])

        wait_until(slot_freed, 15, "the engine to free the slot of the stream whose gateway died")
        cluster.restart_gateway()
        wait_until(lambda: cluster.ready_replicas() == 1, 60, "the new gateway to route")
        body = {"model": MODEL, "prompt": "Hi", "max_tokens": 4}
        assert oneshot.post(f"{cluster.base}/v1/completions", json=body, timeout=60).status_code == 200

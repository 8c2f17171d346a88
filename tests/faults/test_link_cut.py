"""A node's link cut and restored under a steady client load, on real separate network stacks: the
node is seen lost within seconds (keepalives), its replica is placed on the other node after the
grace period, clients see only clean refusals meanwhile, and when the link comes back the node's
old engine is stopped: nothing runs twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.domain import ReplicaPhase
from tests.support import netns
from tests.support.load import steady_load
from tests.support.netns_cluster import netns_cluster
from tests.support.processes import engine_pids
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(netns.available()), reason=netns.available())]

CLEAN = {"ok", "502", "503+retry-after", "429+retry-after"}


def test_a_cut_link_moves_the_replica_and_a_restored_one_runs_nothing_twice(
    tmp_path: Path, smollm2_path: Path
) -> None:
    with netns_cluster(tmp_path, "smollm2", smollm2_path, ["node-a", "node-b"], "2GiB") as cluster:

        def serving_on() -> str:
            replica = cluster.replica("smollm2")
            ready = replica is not None and replica.phase == ReplicaPhase.READY and not replica.parts
            return str(replica.node_id) if ready and replica is not None else ""

        wait_until(lambda: bool(serving_on()), 120, "the model to serve", on_timeout=cluster.logs)
        cut = serving_on()
        other = next(n for n in cluster.agents if n != cut)
        with steady_load(cluster.gateway_url, "smollm2") as outcomes:
            outcomes.served(3)
            cluster.hosts[cut].cut()
            wait_until(
                lambda: serving_on() == other, 90, "the replica on the other node", on_timeout=cluster.logs
            )
            outcomes.served(3)
        assert outcomes.counts["ok"] >= 1, outcomes.counts
        # A request in flight to the cut node ends in a clean 502 (TCP keepalive on the gateway's engine
        # connections), not a client timeout; while no replica is ready, 503 + Retry-After.
        assert set(outcomes.counts) <= CLEAN, (outcomes.counts, outcomes.failures)
        assert engine_pids(cluster.agents[cut])  # cut off, its engine still runs: it cannot be told
        cluster.hosts[cut].restore()
        wait_until(lambda: not engine_pids(cluster.agents[cut]), 60,
                   "the returning node to stop its old engine", on_timeout=cluster.logs)  # fmt: skip
        assert serving_on() == other
        assert engine_pids(cluster.agents[other])

"""`llamafleet nodes drain NODE` under a steady client load: the node's replicas move to the other
node, each stopped only once its replacement serves, nothing new goes there; zero failed requests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.load import steady_load
from tests.support.process_cluster import MODEL, processes
from tests.support.processes import admin_cli, engine_pids
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def llamafleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llamafleet.cli.main", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_draining_a_node_moves_its_replicas_without_a_failed_request(tmp_path: Path) -> None:
    admin = admin_cli(tmp_path)
    with processes(tmp_path) as cluster:
        wait_until(lambda: bool(cluster.serving_on()), 120, "the replica to serve")
        drained = cluster.serving_on()
        other = next(n for n in cluster.agents if n != drained)
        with steady_load(cluster.base, MODEL) as outcomes:
            outcomes.served(3)
            done = llamafleet("nodes", "drain", drained, "--controlplane", cluster.address, *admin)
            assert done.returncode == 0, done.stderr
            assert f"node {drained} cordoned" in done.stdout

            def moved() -> bool:
                return not engine_pids(cluster.agents[drained]) and cluster.serving_on() == other

            wait_until(moved, 120, "the move", on_timeout=lambda: cluster.controlplane.log()[-3000:])
            outcomes.served(3, at_least=11)
        assert outcomes.counts["ok"] > 10, outcomes.counts
        assert outcomes.total == outcomes.counts["ok"], (outcomes.counts, outcomes.failures)
        listing = llamafleet("nodes", "--controlplane", cluster.address, *admin).stdout
        assert "cordoned" in listing
        unknown = llamafleet("nodes", "drain", "node-z", "--controlplane", cluster.address, *admin)
        assert unknown.returncode != 0
        assert "no node 'node-z'" in unknown.stderr
        assert "Traceback" not in unknown.stderr

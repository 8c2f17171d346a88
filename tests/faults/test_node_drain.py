"""`llamafleet nodes drain NODE` under a steady client load: the node's replicas move to the other
node, each stopped only once its replacement serves, nothing new goes there; zero failed requests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from nodeagent.supervisor.process import free_port
from tests.faults.load import steady_load
from tests.support.processes import Proc, agent_args, engine_pids, gateway_args
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def llamafleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llamafleet.cli.main", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_draining_a_node_moves_its_replicas_without_a_failed_request(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n  - name: smol\n    source: builtin:smollm2-135m\n    replicas: 1\n"
        "    contextLength: 512\n    parallelSlots: 2\n    threads: 1\n"
    )
    grpc_port, gw_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    address, base = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{gw_port}"
    cp_args = ["controlplane", "--models", str(models), "--grpc-port", str(grpc_port),
               "--status-interval-s", "1", "--settle-s", "2"]  # fmt: skip
    procs = [Proc("controlplane", cp_args, tmp_path / "cp.log").start()]
    agents = {
        n: Proc(n, agent_args(tmp_path, address, n), tmp_path / f"{n}.log").start()
        for n in ("node-a", "node-b")
    }
    procs += [*agents.values(), Proc("gateway", gateway_args(address, gw_port), tmp_path / "gw.log").start()]
    try:

        def serving_on() -> str:
            try:
                data = httpx.get(f"{base}/v1/models", timeout=2).json()["data"]
            except (httpx.HTTPError, ValueError, KeyError):
                return ""
            if not data or data[0]["llamafleet"]["ready_replicas"] != 1:
                return ""
            return next((n for n, agent in agents.items() if engine_pids(agent)), "")

        wait_until(lambda: bool(serving_on()), 120, "the replica to serve")
        drained = serving_on()
        other = next(n for n in agents if n != drained)
        with steady_load(base, "smol") as outcomes:
            time.sleep(1)
            done = llamafleet("nodes", "drain", drained, "--controlplane", address)
            assert done.returncode == 0, done.stderr
            assert f"node {drained} cordoned" in done.stdout
            wait_until(lambda: not engine_pids(agents[drained]) and serving_on() == other, 120,
                       "the replica to move", on_timeout=lambda: procs[0].log()[-3000:])  # fmt: skip
            time.sleep(2)
        assert outcomes.counts["ok"] > 10, outcomes.counts
        assert outcomes.total == outcomes.counts["ok"], (outcomes.counts, outcomes.failures)
        listing = llamafleet("nodes", "--controlplane", address).stdout
        assert "cordoned" in listing
        unknown = llamafleet("nodes", "drain", "node-z", "--controlplane", address)
        assert unknown.returncode != 0
        assert "no node 'node-z'" in unknown.stderr
        assert "Traceback" not in unknown.stderr
    finally:
        for proc in reversed(procs):
            proc.stop()

"""Kubernetes Node state honoured (issue 34, item 1), with the real kubectl on the API emulator, a real
control plane, two agents and a gateway: `kubectl cordon` stops new placements on a node; a drain
taint moves its replicas away through the rolling path with no failed request under load; a deleted
Node's replicas are placed again at once (not after the disconnected-node grace); and a drain made
with `llamafleet nodes drain` outlives a restart of the control plane."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.client_loop import ClientLoop
from tests.support.kubeapi import CRD_FILE, REPO, KubeApi, kube_api
from tests.support.ports import server_port
from tests.support.processes import (
    Proc,
    admin_cli,
    agent_args,
    cluster_pki,
    gateway_args,
    grpc_port,
    kube_controlplane_args,
    wait_ready,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

MODEL = """apiVersion: llamafleet.io/v1alpha1
kind: Model
metadata:
  name: smol
spec:
  source: builtin:smollm2-135m
  replicas: 1
  contextLength: 512
  parallelSlots: 2
  threads: 1
"""
GRACE_S = 600  # a disconnected node keeps its replicas this long: a deleted Node must not wait for it


def placements(api: KubeApi) -> list[tuple[str, str]]:
    """(node, phase) of each replica, from the Model's status."""
    out = api.kubectl("get", "model", "smol", "-o", "json").stdout
    status = json.loads(out).get("status") or {}
    return sorted((r.get("node", ""), r.get("phase", "")) for r in status.get("replicaStatuses") or [])


def nodes_json(address: str, tmp: Path) -> list[dict[str, object]]:
    listed = subprocess.run(
        [sys.executable, "-m", "llamafleet.cli.main", "nodes", "--json", "--controlplane", address,
         *admin_cli(tmp)], capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    return list(json.loads(listed.stdout)) if listed.returncode == 0 else []


def node_state(address: str, tmp: Path, node_id: str) -> dict[str, object]:
    """What `llamafleet nodes --json` says of ``node_id``'s Kubernetes Node."""
    (node,) = [n for n in nodes_json(address, tmp) if n.get("node_id") == node_id]
    return {k: node[k] for k in ("unschedulable", "draining", "deleted")}


def nodes_table(address: str, tmp: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "llamafleet.cli.main", "nodes", "--controlplane", address, *admin_cli(tmp)],
        capture_output=True, text=True, timeout=30, cwd=REPO, check=True,
    ).stdout  # fmt: skip


def test_cordon_drain_taint_and_deletion_of_kubernetes_nodes(tmp_path: Path) -> None:
    with kube_api(tmp_path, server_port(), crds=()) as api:
        api.kubectl("apply", "-f", str(CRD_FILE))
        for node in ("node-a", "node-b"):
            api.create_node(node, {"kubernetes.io/hostname": node})
        port, http_port, gw_port = grpc_port(), server_port(), server_port()
        address = f"127.0.0.1:{port}"
        cp_args = [*kube_controlplane_args(api.kubeconfig, port, http_port, "cp-0", tmp_path),
                   "--kubernetes-node-labels-refresh-s", "1", "--node-grace-s", str(GRACE_S)]  # fmt: skip
        cp = Proc("controlplane", cp_args, tmp_path / "cp.log").start()
        agents = {
            n: Proc(n, agent_args(tmp_path, address, n), tmp_path / f"{n}.log").start()
            for n in ("node-a", "node-b")
        }
        gateway = Proc("gateway", gateway_args(address, gw_port, tmp_path), tmp_path / "gateway.log").start()
        logs = lambda: "\n".join(p.log()[-3000:] for p in (cp, *agents.values()))  # noqa: E731
        try:
            wait_ready(cp, f"http://127.0.0.1:{http_port}/readyz")
            wait_until(lambda: len([n for n in nodes_json(address, tmp_path) if n.get("connected")]) == 2, 60,
                       "both nodes to connect", on_timeout=logs)  # fmt: skip
            (tmp_path / "model.yaml").write_text(MODEL)
            api.kubectl("apply", "-f", str(tmp_path / "model.yaml"))
            api.kubectl("wait", "--for=condition=Ready", "model/smol", "--timeout=120s", timeout=130)
            ((first, _),) = placements(api)
            other = "node-b" if first == "node-a" else "node-a"

            # kubectl cordon: no new placement there, nothing moved.
            api.kubectl("cordon", other)
            wait_until(lambda: f"node {other}: its Kubernetes Node is cordoned" in cp.log(), 60,
                       "the control plane to read the cordon", on_timeout=logs)  # fmt: skip
            cordoned = {"unschedulable": True, "draining": "", "deleted": False}
            assert node_state(address, tmp_path, other) == cordoned
            assert "Kubernetes Node cordoned" in nodes_table(address, tmp_path)
            api.kubectl("scale", "model/smol", "--replicas=2")
            wait_until(lambda: placements(api) == [(first, "ready"), (first, "ready")], 120,
                       f"both replicas on {first} (the other node is cordoned)", on_timeout=logs)  # fmt: skip
            api.kubectl("uncordon", other)

            # A drain taint: the replicas move to the other node, new ones ready before old ones stop.
            base = f"http://127.0.0.1:{gw_port}"
            with ClientLoop(base, parallel=2).running() as loop:
                loop.served(5)
                api.kubectl("taint", "node", first, "llamafleet.io/drain=:NoSchedule")
                draining = lambda: node_state(address, tmp_path, first)["draining"] == "llamafleet.io/drain"  # noqa: E731
                wait_until(draining, 60, f"`llamafleet nodes` to show {first} draining", on_timeout=logs)
                wait_until(lambda: placements(api) == [(other, "ready"), (other, "ready")], 180,
                           f"both replicas moved to {other}", on_timeout=logs)  # fmt: skip
                loop.served(5)
            assert loop.failures == [], loop.failures[:5]
            api.kubectl("taint", "node", first, "llamafleet.io/drain-")

            # The Node is deleted: its replicas are placed again now, not after the grace period.
            deleted = time.monotonic()
            api.kubectl("delete", "node", other)
            wait_until(lambda: placements(api) == [(first, "ready"), (first, "ready")], 120,
                       f"the replicas placed again on {first}", on_timeout=logs)  # fmt: skip
            assert time.monotonic() - deleted < GRACE_S / 4
            assert not any(
                n.get("connected") for n in nodes_json(address, tmp_path) if n.get("node_id") == other
            )
        finally:
            gateway.stop()
            for agent in agents.values():
                agent.stop()
            cp.stop()


def test_a_drain_asked_with_llamafleet_nodes_drain_outlives_a_control_plane_restart(tmp_path: Path) -> None:
    """Kept beside the node keys (a file next to the CA here; the node-keys ConfigMap in Kubernetes mode,
    which a failover's new leader reads), so a new leader goes on draining the node."""
    (tmp_path / "models.yaml").write_text("models: []\n")
    port, http_port = grpc_port(), server_port()
    address = f"127.0.0.1:{port}"
    args = ["controlplane", "--models", str(tmp_path / "models.yaml"), "--grpc-port", str(port),
            "--http-port", str(http_port), "--tls-dir", str(tmp_path / "pki"), "--settle-s", "1"]  # fmt: skip
    cluster_pki(tmp_path)
    cp = Proc("controlplane", args, tmp_path / "cp.log").start()
    agent = Proc("agent", agent_args(tmp_path, address), tmp_path / "agent.log").start()
    try:
        wait_until(
            lambda: any(n.get("connected") for n in nodes_json(address, tmp_path)), 60, "node-a to connect"
        )
        drained = subprocess.run(
            [sys.executable, "-m", "llamafleet.cli.main", "nodes", "drain", "node-a",
             "--controlplane", address, *admin_cli(tmp_path)],
            capture_output=True, text=True, timeout=30, cwd=REPO,
        )  # fmt: skip
        assert drained.returncode == 0, drained.stderr
        assert cp.stop() == 0
        cp = Proc("controlplane", args, tmp_path / "cp2.log").start()  # a new leader, nothing in memory
        back = lambda: any(n.get("connected") and n.get("cordoned") for n in nodes_json(address, tmp_path))  # noqa: E731
        wait_until(back, 60, "node-a to come back cordoned", on_timeout=cp.log)
    finally:
        agent.stop()
        cp.stop()

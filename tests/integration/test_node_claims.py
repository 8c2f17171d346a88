"""What a node claims is checked in Kubernetes mode (issue 28, item 4), with the real kubectl on the
API emulator, a real control plane and agent: the agent's reported labels attract nothing (its
Kubernetes Node's do, and relabeling the Node takes effect live), and an address it advertises but
does not connect from is refused until its agent pod on that Node has that IP."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.kubeapi import CRD_FILE, REPO, kube_api
from tests.support.ports import server_port
from tests.support.processes import Proc, admin_cli, agent_args, grpc_port, kube_controlplane_args, wait_ready
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

AGENT_POD = {"app.kubernetes.io/component": "agent"}
MODEL = """apiVersion: llamafleet.io/v1alpha1
kind: Model
metadata:
  name: gpu-only
spec:
  source: builtin:smollm2-135m
  contextLength: 512
  parallelSlots: 1
  threads: 1
  nodeSelector: {tier: gpu}
"""


def test_a_nodes_labels_and_address_come_from_kubernetes_not_from_its_agent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with kube_api(tmp_path, server_port(), crds=()) as api:
        api.kubectl("apply", "-f", str(CRD_FILE))
        api.create_node("node-a", {"kubernetes.io/hostname": "node-a", "pool": "cpu"})
        port, http_port = grpc_port(), server_port()
        address = f"127.0.0.1:{port}"
        cp = Proc("controlplane", [*kube_controlplane_args(api.kubeconfig, port, http_port, "cp-0", tmp_path),
                                   "--kubernetes-agent-selector", "app.kubernetes.io/component=agent",
                                   "--kubernetes-node-labels-refresh-s", "1"],
                  tmp_path / "cp.log").start()  # fmt: skip
        # The agent claims tier=gpu, and advertises 127.0.0.2 while it connects from 127.0.0.1 (as
        # behind a proxy that hides its address).
        agent = Proc("agent", [*agent_args(tmp_path, address), "--labels", "tier=gpu",
                               "--supervisor-advertise-host", "127.0.0.2",
                               "--supervisor-engine-bind-host", "127.0.0.2"],
                     tmp_path / "agent.log").start()  # fmt: skip
        try:
            wait_ready(cp, f"http://127.0.0.1:{http_port}/readyz")
            wait_until(lambda: "advertises 127.0.0.2 but connects from 127.0.0.1" in agent.log(), 60,
                       "the agent to be refused for its address")  # fmt: skip
            assert nodes(address, tmp_path) == []
            # Its pod on node-a has that IP (as the kubelet reports it): now it is believed.
            api.create_pod("agent-x1", AGENT_POD, "default", node="node-a", ip="127.0.0.2")
            wait_until(lambda: len(nodes(address, tmp_path)) == 1, 60, "node-a to connect")
            (node,) = nodes(address, tmp_path)
            assert node["labels"] == {"kubernetes.io/hostname": "node-a", "pool": "cpu"}  # not tier=gpu

            (tmp_path / "model.yaml").write_text(MODEL)
            api.kubectl("apply", "-f", str(tmp_path / "model.yaml"))
            wait_until(lambda: "tier=gpu" in condition(api, "Placed").get("message", ""), 60,
                       "the Model to say why it is not placed")  # fmt: skip
            assert condition(api, "Ready").get("status") != "True"

            api.kubectl("label", "node", "node-a", "tier=gpu")  # the platform team labels the Node
            api.kubectl("wait", "--for=condition=Ready", "model/gpu-only", "--timeout=120s", timeout=130)
            (node,) = nodes(address, tmp_path)
            assert node["labels"]["tier"] == "gpu"
        finally:
            agent.stop()
            cp.stop()


def nodes(address: str, tmp) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    listed = subprocess.run(
        [sys.executable, "-m", "llamafleet.cli.main", "nodes", "--json", "--controlplane", address,
         *admin_cli(tmp)], capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    if listed.returncode != 0:
        return []
    found: list[dict[str, object]] = [n for n in json.loads(listed.stdout) if n.get("connected")]
    return found


def condition(api, kind: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = api.kubectl("get", "model", "gpu-only", "-o", "json").stdout
    for c in (json.loads(out).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def test_a_bootstrap_token_joins_only_under_the_name_of_a_kubernetes_node(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 34, item 5: the token alone cannot invent a node; the agent says why in one line and stops."""
    with kube_api(tmp_path, server_port(), crds=()) as api:
        api.kubectl("apply", "-f", str(CRD_FILE))
        port, http_port = grpc_port(), server_port()
        address = f"127.0.0.1:{port}"
        cp = Proc("controlplane", kube_controlplane_args(api.kubeconfig, port, http_port, "cp-0", tmp_path),
                  tmp_path / "cp.log").start()  # fmt: skip
        ghost = Proc("agent", agent_args(tmp_path, address, node="ghost"), tmp_path / "ghost.log").start()
        try:
            wait_ready(cp, f"http://127.0.0.1:{http_port}/readyz")
            wait_until(lambda: not ghost.alive(), 60, "the agent named ghost to stop")
            assert ghost.stop() != 0
            refused = "llamafleet: the control plane"
            said = [line for line in ghost.log().splitlines()
                    if line.startswith(refused) and "ghost is not a Kubernetes Node" in line]  # fmt: skip
            assert len(said) == 1, ghost.log()  # its last words, one line
            assert "Traceback" not in ghost.log()
            api.create_node("ghost", {"kubernetes.io/hostname": "ghost"})  # the kubelet registers it
            joined = Proc(
                "agent", agent_args(tmp_path, address, node="ghost"), tmp_path / "joined.log"
            ).start()
            try:
                wait_until(lambda: len(nodes(address, tmp_path)) == 1, 60, "ghost to join as a real Node")
            finally:
                joined.stop()
        finally:
            cp.stop()

"""The control plane is replaceable at any moment: a SIGKILLed leader, a plain restart or a Deployment's
rolling update costs no request and no engine restart (agents report what they run; the new control
plane adopts it). Agents and gateways reach the leader through a Service that selects the label only
the leader's pod carries; followers are Ready too."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from controlplane.agents.servicer import STOPPING
from controlplane.operator.leader import LEADER_LABEL
from llamafleet.core.errors import LlamafleetError
from tests.support import node_identity, oneshot
from tests.support.client_loop import ClientLoop
from tests.support.kubeapi import KubeApi, kube_api
from tests.support.ports import server_port
from tests.support.processes import (
    Proc,
    admin_client,
    agent_args,
    cluster_pki,
    controlplane_args,
    engine_pids,
    gateway_args,
    grpc_port,
    kube_controlplane_args,
    ready,
    role,
    wait_leading,
    wait_ready,
)
from tests.support.service import Backend, Service
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

MODEL = """apiVersion: llamafleet.io/v1alpha1
kind: Model
metadata:
  name: smol
spec:
  source: builtin:smollm2-135m
  replicas: 2
  contextLength: 512
  parallelSlots: 2
  threads: 1
"""


def gateway_current(url: str) -> bool:
    try:
        return oneshot.get(f"{url}/readyz", timeout=1).json().get("routes") == "current"
    except (httpx.HTTPError, ValueError):
        return False


POD_LABELS = {"app.kubernetes.io/component": "controlplane"}


@dataclass
class ControlPlanes:
    api: KubeApi
    cps: list[Proc]
    ready_urls: list[str]
    agent: Proc
    base: str  # the gateway
    tmp: Path
    services: list[Service]
    extra: tuple[str, ...] = ()  # more control-plane flags

    def status(self, name: str = "smol") -> dict[str, Any]:
        out = self.api.kubectl("get", "model", name, "-o", "json").stdout
        status: dict[str, Any] = json.loads(out).get("status") or {}
        return status

    def start(self, index: int) -> Proc:
        """``cp-INDEX`` in its pod (as a ReplicaSet creates one), an endpoint of both Services."""
        name, (port, http) = f"cp-{index}", (grpc_port(), server_port())
        self.api.create_pod(name, POD_LABELS)
        args = [*kube_controlplane_args(self.api.kubeconfig, port, http, name, self.tmp),
                "--kubernetes-pod-name", name, *self.extra]  # fmt: skip
        proc = Proc(name, args, self.tmp / f"{name}.log").start()
        url = f"http://127.0.0.1:{http}/readyz"
        service, join = self.services
        service.backends.append(Backend(("127.0.0.1", port), url, name))
        join.backends.append(Backend(("127.0.0.1", port + 1), url, name))
        self.cps.append(proc)
        self.ready_urls.append(url)
        return proc

    def leader_labels(self) -> dict[str, str]:
        return {cp.name: self.api.pod_labels(cp.name).get(LEADER_LABEL, "") for cp in self.cps}


@contextmanager
def two_controlplanes(tmp_path: Path, manifest: str, model: str, *extra: str) -> Iterator[ControlPlanes]:
    """Two control planes behind one Service (cp-0 leads), an agent, a gateway, and ``manifest`` Ready;
    ``extra``: more flags for every control plane."""
    with kube_api(tmp_path, server_port()) as api:

        def selects(pod: str) -> bool:  # the chart's selector: the leader's label
            return api.pod_labels(pod).get(LEADER_LABEL) == "true"

        gw_port = server_port()
        base = f"http://127.0.0.1:{gw_port}"
        service = Service(server_port(), [], selects=selects)
        join = Service(server_port(), [], selects=selects)  # nodes join through it (the join port)
        with service, join:
            c = ControlPlanes(api, [], [], None, base, tmp_path, [service, join], extra)  # type: ignore[arg-type]
            wait_leading(c.start(0), c.ready_urls[0])  # cp-0 leads; cp-1 follows
            c.start(1)
            for name in ("node-a", "node-k"):  # the Nodes the kubelets registered (agents join only as one)
                api.create_node(name, {"kubernetes.io/hostname": name})
            args = [*agent_args(tmp_path, service.address), "--uplink-join", join.address]
            c.agent = Proc("agent", args, tmp_path / "agent.log").start()
            gateway = Proc(
                "gateway", gateway_args(service.address, gw_port, tmp_path), tmp_path / "gw.log"
            ).start()
            try:
                (tmp_path / "model.yaml").write_text(manifest)
                api.kubectl("apply", "-f", str(tmp_path / "model.yaml"))
                api.kubectl("wait", "--for=condition=Ready", f"model/{model}", "--timeout=120s", timeout=130)
                wait_until(lambda: gateway_current(base), 30, "the gateway's routes")
                # Readiness is not leadership: the follower is Ready, and only the leader's pod is labeled.
                wait_until(lambda: ready(c.ready_urls[1]), 30, "the follower to be Ready")
                assert role(c.ready_urls[1]) == "follower"
                assert c.leader_labels() == {"cp-0": "true", "cp-1": ""}
                yield c
            finally:
                for proc in (gateway, c.agent, *c.cps):
                    proc.stop()


def test_killing_the_leader_hands_over_within_15s_without_a_failed_request(tmp_path: Path) -> None:
    with two_controlplanes(tmp_path, MODEL, "smol") as c:
        before = engine_pids(c.agent)
        assert len(before) == 2
        join, pki_dir = c.services[1].address, cluster_pki(tmp_path)
        code, _ = asyncio.run(node_identity.join(join, pki_dir, "node-k", tmp_path))
        assert code == grpc.StatusCode.OK
        with ClientLoop(c.base).running() as loop:
            loop.served(5)
            c.cps[0].process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            wait_leading(c.cps[1], c.ready_urls[1], timeout=30)
            takeover = time.monotonic() - killed
            wait_until(lambda: gateway_current(c.base), 60, "the gateway to follow the new leader")
            loop.served(5, at_least=21)
        assert takeover < 15, f"the follower took {takeover:.1f}s to lead"
        assert loop.failures == [], loop.failures[:5]
        assert loop.ok > 20, loop.ok
        assert engine_pids(c.agent) == before, "engines were restarted by the failover"
        holder = c.api.kubectl(
            "get", "lease", "llamafleet-controlplane", "-o", "jsonpath={.spec.holderIdentity}"
        )
        assert holder.stdout == "cp-1"
        described = c.api.kubectl("describe", "model", "smol").stdout
        assert "Adopted" in described, described  # the new leader took both replicas over
        assert "adopted replica" in c.cps[1].log()
        # The node keys outlive the leader: the new one refuses node-k's id to a new key as cp-0 would.
        keys = c.api.kubectl("get", "configmap", "llamafleet-node-keys", "-o", "json").stdout
        assert set(json.loads(keys)["data"]) == {"node-a", "node-k"}
        code, _ = asyncio.run(node_identity.join(join, pki_dir, "node-k", tmp_path))
        assert code == grpc.StatusCode.ALREADY_EXISTS


def test_a_rolling_update_as_the_deployment_controller_runs_it_fails_no_request(tmp_path: Path) -> None:
    """maxSurge 1, maxUnavailable 0, two replicas: a new pod starts and becomes Ready (a follower), then an
    old one gets SIGTERM, the leader first; again for the second. The leader hands its Lease and its label
    over as it stops; agents and gateways follow the Service to the new leader."""
    with two_controlplanes(tmp_path, MODEL, "smol") as c:
        before = engine_pids(c.agent)
        with ClientLoop(c.base).running() as loop:
            for new, old in ((2, 0), (3, 1)):
                c.start(new)
                wait_until(lambda new=new: ready(c.ready_urls[new]), 60, f"cp-{new} to be Ready")
                assert role(c.ready_urls[new]) == "follower"
                assert c.cps[old].stop(signal.SIGTERM) == 0  # the terminated pod's process exits cleanly
                wait_until(lambda: sum(role(u) == "leader" for u in c.ready_urls) == 1, 30, "a new leader")
                wait_until(lambda: gateway_current(c.base), 60, "the gateway to follow the leader")
            loop.served(5, at_least=21)
        labels = c.leader_labels()
        leaders = [name for name, value in labels.items() if value == "true"]
        assert len(leaders) == 1, labels
        assert leaders[0] in ("cp-2", "cp-3"), labels
        assert loop.failures == [], loop.failures[:5]
        assert loop.ok > 20, loop.ok
        assert engine_pids(c.agent) == before, "engines were restarted by the rollout"
        assert "released the Lease" in c.cps[0].log()
        # A stopping control plane ends its agents' streams at once, saying so (not at its server's grace)
        assert STOPPING in c.agent.log()
        for stopped in (c.cps[0], c.cps[1]):  # and ends them cleanly: no servicer traceback in its log
            assert "Traceback" not in stopped.log(), stopped.log()[-3000:]


AUTOSCALED = """apiVersion: llamafleet.io/v1alpha1
kind: Model
metadata:
  name: smol
spec:
  source: builtin:smollm2-135m
  replicas: 1
  contextLength: 512
  parallelSlots: 1
  threads: 1
  autoscaling: {minReplicas: 1, maxReplicas: 2, targetUtilization: 1.0, stableWindow: 4s, panicWindow: 1s}
"""


# Leases 3x shorter than the defaults: what is tested here is what the new leader does, not how soon it
# leads (the default lease's handover: the test above).
SHORT_LEASE = ("--kubernetes-lease-duration-s", "3", "--kubernetes-renew-deadline-s", "2",
               "--kubernetes-retry-period-s", "0.5")  # fmt: skip


def test_a_new_leader_carries_on_with_the_autoscaled_count(tmp_path: Path) -> None:
    """The autoscaler's count lives in the Model's status: after a failover the new leader keeps it (and
    the replicas) instead of falling back to spec.replicas, and the scale-up is an Event."""
    with two_controlplanes(tmp_path, AUTOSCALED, "smol", *SHORT_LEASE) as c:
        with ClientLoop(c.base, parallel=3, max_tokens=48).running():  # 3 clients on 1 slot: 2 (the max)
            wait_until(lambda: (c.status().get("autoscaling") or {}).get("desiredReplicas") == 2, 60,
                       "the autoscaler's 2 replicas in status")  # fmt: skip
            wait_until(lambda: len(engine_pids(c.agent)) == 2, 60, "two engines")
        before = engine_pids(c.agent)
        assert "ScaledUp" in c.api.kubectl("describe", "model", "smol").stdout
        c.cps[0].process.send_signal(signal.SIGKILL)
        wait_leading(c.cps[1], c.ready_urls[1], timeout=30)
        wait_until(lambda: "carrying on with 2 replica(s)" in c.cps[1].log(), 30, "the new leader to act")
        time.sleep(3)  # what it did next: with 1 replica (spec.replicas) an engine would stop now
        assert engine_pids(c.agent) == before, "the new leader dropped or restarted the autoscaled replicas"


def listed_node(address: str, tmp: Path, node_id: str) -> dict[str, Any] | None:
    """What the control plane behind ``address`` says of ``node_id`` (None while none answers)."""

    async def listed() -> dict[str, Any] | None:
        client = admin_client(address, tmp)
        try:
            nodes = await client.list_nodes()
        finally:
            await client.close()
        found = [{"connected": n.connected, "cordoned": n.cordoned} for n in nodes if n.node_id == node_id]
        return found[0] if found else None

    try:
        return asyncio.run(listed())
    except (grpc.RpcError, LlamafleetError):  # the old leader gone, the new one not yet behind the Service
        return None


def test_a_new_leader_keeps_draining_the_node_the_old_one_was_asked_to(tmp_path: Path) -> None:
    """`llamafleet nodes drain` through the leader is kept in the node-keys ConfigMap; the follower (up
    since before the drain) reads it when it takes over, so the node stays cordoned; an uncordon through
    the new leader is written there too."""
    with two_controlplanes(tmp_path, MODEL, "smol", *SHORT_LEASE) as c:
        service = c.services[0].address  # the leader's, whichever it is

        async def cordon(cordoned: bool) -> bool:
            client = admin_client(service, tmp_path)
            try:
                return (await client.cordon_node("node-a", cordoned)).cordoned
            finally:
                await client.close()

        assert asyncio.run(cordon(True)) is True

        def kept() -> dict[str, str]:
            out = c.api.kubectl("get", "configmap", "llamafleet-node-keys", "-o", "json").stdout
            return {k: v for k, v in json.loads(out)["data"].items() if k.startswith("cordoned_")}

        assert kept() == {"cordoned_node-a": "true"}
        c.cps[0].process.send_signal(signal.SIGKILL)
        wait_leading(c.cps[1], c.ready_urls[1], timeout=30)
        back = {"connected": True, "cordoned": True}
        wait_until(lambda: listed_node(service, tmp_path, "node-a") == back, 60,
                   "node-a back at the new leader, still cordoned", on_timeout=c.cps[1].log)  # fmt: skip
        assert asyncio.run(cordon(False)) is False
        assert kept() == {"cordoned_node-a": "false"}  # a later leader will not drain it


def test_a_restarted_controlplane_adopts_every_engine_and_no_request_fails(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n  - name: smol\n    source: builtin:smollm2-135m\n    replicas: 2\n"
        "    contextLength: 512\n    parallelSlots: 2\n    threads: 1\n"
    )
    port, http_port, gw_port = grpc_port(), server_port(), server_port()
    address, base = f"127.0.0.1:{port}", f"http://127.0.0.1:{gw_port}"
    cp_args = controlplane_args(tmp_path, port, "--models", str(models), "--http-port", str(http_port),
                                "--status-interval-s", "1")  # fmt: skip
    cp = Proc("controlplane", cp_args, tmp_path / "cp.log").start()
    agent = Proc("agent", agent_args(tmp_path, address), tmp_path / "agent.log").start()
    gateway = Proc("gateway", gateway_args(address, gw_port, tmp_path), tmp_path / "gw.log").start()
    restarted = cp
    try:
        wait_ready(cp, f"http://127.0.0.1:{http_port}/readyz")

        def two_ready() -> bool:
            try:
                data = oneshot.get(f"{base}/v1/models", timeout=2).json()["data"]
            except (httpx.HTTPError, ValueError, KeyError):
                return False
            return bool(data) and data[0]["llamafleet"]["ready_replicas"] == 2

        wait_until(two_ready, 120, "two ready replicas")
        before = engine_pids(agent)
        with ClientLoop(base).running() as loop:
            loop.served(3)
            assert cp.stop(signal.SIGTERM) == 0
            wait_until(lambda: oneshot.get(f"{base}/readyz", timeout=2).json()["routes"] == "stale", 30,
                       "the gateway to call its routes stale")  # fmt: skip
            restarted = Proc("controlplane-2", cp_args, tmp_path / "cp2.log").start()
            wait_ready(restarted, f"http://127.0.0.1:{http_port}/readyz")
            wait_until(lambda: gateway_current(base), 60, "the gateway to reconnect")
            loop.served(3, at_least=11)
        assert loop.failures == [], loop.failures[:5]
        assert loop.ok > 10, loop.ok
        assert engine_pids(agent) == before, "engines were restarted by the control-plane restart"
        assert restarted.log().count("adopted replica") == 2, restarted.log()
        assert two_ready()
    finally:
        for proc in (gateway, agent, restarted):
            proc.stop()


def test_a_second_controlplane_on_a_busy_port_refuses_to_start(tmp_path: Path) -> None:
    """No SO_REUSEPORT sharing: two control planes on one port would split the agents between them."""
    port, http_port = grpc_port(), server_port()
    first = Proc("first", controlplane_args(tmp_path, port, "--http-port", str(http_port)),
                 tmp_path / "first.log").start()  # fmt: skip
    try:
        wait_ready(first, f"http://127.0.0.1:{http_port}/readyz")
        second = Proc("second", controlplane_args(tmp_path, port), tmp_path / "second.log").start()
        assert second.process.wait(timeout=30) == 1
        assert f"cannot bind the control plane's gRPC port 127.0.0.1:{port}" in second.log()
        assert "Traceback" not in second.log()
        assert first.alive()
    finally:
        first.stop()

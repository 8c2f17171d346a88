"""What the control plane believes about a node in Kubernetes mode (issue 28, item 4).

Labels come from the Kubernetes Node of the same name (plus the labels the chart gives every agent
pod), never from the agent's report: holding a node's certificate must not be enough to attract
Models restricted by nodeSelector. They are re-read while the node is connected, so `kubectl label
node` takes effect without a restart. A node that is no Kubernetes Node (an agent outside the
cluster that joined with the token) gets the chart's agent labels only.

The advertised address must be where the node connects from, or, when a proxy or mesh hides that,
the IP of the agent's pod on that Node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from controlplane.operator.kube import Kube, KubeError
from controlplane.settings import KubernetesSettings
from controlplane.state.cluster import ClusterState
from controlplane.state.node_addresses import (
    NodeRefused,
    address_refusal,
    advertised_from_peer,
    loopback_refusal,
)

log = logging.getLogger(__name__)

# Taints that say a Node is about to go: ours (`kubectl taint node NODE llamafleet.io/drain=:NoSchedule`),
# the Cluster Autoscaler's and Karpenter's before they remove a node. Its replicas move away through
# the rolling path, new ones ready before old ones stop. (`kubectl drain` skips DaemonSet pods, so the
# agent pod's eviction never comes: a cordon alone only stops new placements.)
DRAIN_TAINTS = ("llamafleet.io/drain", "ToBeDeletedByClusterAutoscaler", "karpenter.sh/disrupted",
                "karpenter.sh/disruption")  # fmt: skip


class KubeNodeFacts:
    def __init__(self, kube: Kube, settings: KubernetesSettings, address_check: bool) -> None:
        self._kube = kube
        self._settings = settings
        self._check = address_check
        self._extra = dict(label.split("=", 1) for label in settings.agent_labels if "=" in label)

    async def labels(self, node_id: str) -> dict[str, str]:
        try:
            node = await self._kube.get_node(node_id)
        except KubeError as exc:
            if exc.status == 403:
                log.error("cannot read Node %s: %s (the control plane's ClusterRole needs nodes: get)",
                          node_id, exc.message)  # fmt: skip
            raise NodeRefused(f"the control plane cannot read Node {node_id} now; retry", retry=True) from exc
        found = ((node or {}).get("metadata") or {}).get("labels") or {}
        return {**found, **self._extra}

    async def may_join(self, node_id: str) -> None:
        """Only under the name of an existing Kubernetes Node (the agent pod's spec.nodeName): a bootstrap
        token alone cannot invent nodes that placement would then trust."""
        try:
            node = await self._kube.get_node(node_id)
        except KubeError as exc:
            raise NodeRefused(f"the control plane cannot read Node {node_id} now; retry", retry=True) from exc
        if node is None:
            raise NodeRefused(
                f"{node_id} is not a Kubernetes Node: in Kubernetes mode an agent joins only under its "
                "Node's name (--node-id from the pod's spec.nodeName, as the chart sets it)"
            )

    async def verify(
        self, node_id: str, advertise_host: str, labels: dict[str, str], peer: str
    ) -> dict[str, str]:
        if (refused := loopback_refusal(node_id, advertise_host, peer)) is not None:
            raise refused
        await self.may_join(node_id)  # a deleted Node's agent cannot come back under its name
        if (
            self._check
            and not advertised_from_peer(advertise_host, peer)
            and not await self._pod_has(node_id, advertise_host)
        ):
            raise address_refusal(node_id, advertise_host, peer)
        believed = await self.labels(node_id)
        ignored = {k: v for k, v in labels.items() if believed.get(k) != v}
        if ignored:
            log.info("node %s: labels from its Kubernetes Node, not its report (ignored: %s)", node_id,
                     ", ".join(f"{k}={v}" for k, v in sorted(ignored.items())))  # fmt: skip
        return believed

    async def _pod_has(self, node_id: str, address: str) -> bool:
        """Whether an agent pod on Node ``node_id`` has IP ``address``."""
        if not self._settings.agent_selector:
            return False
        try:
            pods = await self._kube.list_pods(
                self._settings.lease_namespace, self._settings.agent_selector, f"spec.nodeName={node_id}"
            )
        except KubeError as exc:
            raise NodeRefused(f"the control plane cannot list agent pods now ({exc.message}); retry",
                              retry=True) from exc  # fmt: skip
        ips = {ip.get("ip") for p in pods for ip in (p.get("status") or {}).get("podIPs") or []}
        ips |= {(p.get("status") or {}).get("podIP") for p in pods}
        return address in ips

    async def run(self, state: ClusterState, stop: asyncio.Event) -> None:
        """Every node_labels_refresh_s, each node's Kubernetes Node: its labels (connected nodes), whether
        it is cordoned or carries a drain taint, and whether it still exists."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.node_labels_refresh_s)
            for node_id in [n.node_id for n in state.nodes.values() if not n.deleted]:
                try:
                    node = await self._kube.get_node(node_id)
                except KubeError as exc:
                    log.warning(
                        "cannot read Node %s now (%s); its state stays as it was", node_id, exc.message
                    )
                    continue
                if node is None:
                    state.node_deleted(node_id)
                    continue
                spec = node.get("spec") or {}
                taints = [t.get("key", "") for t in spec.get("taints") or []]
                draining = next((t for t in taints if t in DRAIN_TAINTS), "")
                state.set_kube_node(node_id, bool(spec.get("unschedulable")), draining)
                if state.nodes[node_id].connected:
                    labels = ((node.get("metadata") or {}).get("labels")) or {}
                    state.set_node_labels(node_id, {**labels, **self._extra})

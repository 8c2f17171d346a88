"""Every metric the control plane exports, defined in one place."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controlplane.domain import ReplicaPhase, ReplicaRecord
from controlplane.state.cluster import ClusterState


class ControlPlaneMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.decisions = Counter(
            "llamafleet_scheduler_decisions_total", "Placement decisions by model and result",
            ["model", "result"], registry=registry,
        )  # fmt: skip
        self.rejections = Counter(
            "llamafleet_scheduler_rejections_total", "Nodes rejected for a replica, by the rejecting filter",
            ["filter"], registry=registry,
        )  # fmt: skip
        self.scale_events = Counter(
            "llamafleet_autoscaler_scale_events_total",
            "Replica count changes the autoscaler decided, by model and direction (up, down)",
            ["model", "direction"], registry=registry,
        )  # fmt: skip
        self.placement_seconds = Histogram(
            "llamafleet_scheduler_placement_seconds", "Time to place one replica",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1), registry=registry,
        )  # fmt: skip


class ClusterCollector(Collector):
    """Gauges read from the cluster state at scrape time: what the alerts and the dashboard need."""

    def __init__(self, state: ClusterState, leading: Callable[[], bool]) -> None:
        self._state = state
        self._leading = leading

    def collect(self) -> Iterator[Metric]:
        leader = GaugeMetricFamily(
            "llamafleet_controlplane_leader",
            "1 while this control plane acts (the leader, in Kubernetes mode)",
        )
        leader.add_metric([], 1 if self._leading() else 0)
        yield leader
        if not self._leading():
            return  # a follower knows nothing current: only the leader reports the cluster
        replicas = GaugeMetricFamily(
            "llamafleet_model_replicas",
            "Replicas per model by state: desired, ready, pending (no node), failed",
            labels=["model", "state"],
        )
        by_model: dict[str, list[ReplicaRecord]] = {}
        for replica in self._state.replicas.values():
            by_model.setdefault(replica.model, []).append(replica)
        for name, spec in self._state.models.items():
            mine = by_model.get(name, [])
            counts = {
                "desired": self._state.target_replicas(spec),
                "ready": sum(1 for r in mine if r.phase == ReplicaPhase.READY),
                "pending": sum(1 for r in mine if r.node_id is None),
                "failed": sum(1 for r in mine if r.phase == ReplicaPhase.FAILED),
            }
            for state, count in counts.items():
                replicas.add_metric([name, state], count)
        yield replicas
        yield from self._autoscaling()
        nodes = GaugeMetricFamily(
            "llamafleet_node_connected", "1 while a node's agent is connected", labels=["node"]
        )
        free = GaugeMetricFamily(
            "llamafleet_node_memory_free_bytes", "Host memory available on a node", labels=["node"]
        )
        total = GaugeMetricFamily(
            "llamafleet_node_memory_total_bytes", "Host memory of a node", labels=["node"]
        )
        for node in self._state.nodes.values():
            nodes.add_metric([node.node_id], 1 if node.connected else 0)
            free.add_metric([node.node_id], node.ram_free_bytes)
            total.add_metric([node.node_id], node.ram_total_bytes)
        yield from (nodes, free, total)

    def _autoscaling(self) -> Iterator[Metric]:
        demand = GaugeMetricFamily(
            "llamafleet_model_demand",
            "Requests per model in engines plus queued or held in gateways, summed over the gateways "
            "(the autoscaling signal; an HPA or KEDA in External mode scales on it)",
            labels=["model"],
        )
        panic = GaugeMetricFamily(
            "llamafleet_autoscaler_panic", "1 while a burst holds the model in panic mode", labels=["model"]
        )
        for name in self._state.models:
            load = self._state.demand.load(name)
            if load is not None:
                demand.add_metric([name], load.demand)
            scaled = self._state.scaling.get(name)
            if scaled is not None:
                panic.add_metric([name], 1 if scaled.panic else 0)
        yield from (demand, panic)

"""Every metric the control plane exports, defined in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


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
        self.placement_seconds = Histogram(
            "llamafleet_scheduler_placement_seconds", "Time to place one replica",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1), registry=registry,
        )  # fmt: skip

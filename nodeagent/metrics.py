"""Every metric the node agent exports, defined in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.engine_restarts = Counter(
            "llamafleet_agent_engine_restarts_total", "Engine restarts after a crash or hang", ["model"],
            registry=registry,
        )  # fmt: skip
        self.replicas = Gauge(
            "llamafleet_agent_replicas", "Replicas on this node by phase", ["phase"], registry=registry
        )
        self.connected = Gauge(
            "llamafleet_agent_controlplane_connected",
            "1 while the control-plane stream is up",
            registry=registry,
        )
        self.reconnects = Counter(
            "llamafleet_agent_controlplane_reconnects_total",
            "Control-plane streams (re)opened",
            registry=registry,
        )

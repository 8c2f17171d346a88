"""Every metric the gateway exports, defined in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


TENANT_LABELS = 200


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "llamafleet_gateway_requests_total", "Requests by model, endpoint and HTTP status",
            ["model", "endpoint", "status"], registry=registry,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "llamafleet_gateway_request_duration_seconds", "Request latency, to the last byte",
            ["model", "endpoint"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.ttft_seconds = Histogram(
            "llamafleet_gateway_time_to_first_token_seconds", "Time to the first streamed token",
            ["model"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.generated_tokens = Counter(
            "llamafleet_gateway_generated_tokens_total",
            "Completion tokens returned",
            ["model"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "llamafleet_gateway_in_flight_requests", "Requests being served, per replica", ["replica"],
            registry=registry,
        )  # fmt: skip
        self.decisions = Counter(
            "llamafleet_gateway_balancer_decisions_total",
            "Replica choices by policy and reason (prefix-owner: a replica holding the most of the prompt)",
            ["policy", "reason"], registry=registry,
        )  # fmt: skip
        # The endpoint picker (controlplane/gateway/picker/: GIE's ext_proc protocol), when it serves.
        self.picker_requests = Counter(
            "llamafleet_picker_requests_total",
            "Endpoint-picker outcomes: picked, no_endpoint (503), shed (429), fallback_served (the data "
            "plane used a fallback)", ["outcome"], registry=registry,
        )  # fmt: skip
        self.picker_seconds = Histogram(
            "llamafleet_picker_pick_seconds", "Time from a request's body to the pick (queueing too)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30), registry=registry,
        )  # fmt: skip
        self.queue_length = Gauge(
            "llamafleet_gateway_queue_length", "Requests waiting for a free slot, per model", ["model"],
            registry=registry,
        )  # fmt: skip
        self.queue_wait_seconds = Histogram(
            "llamafleet_gateway_queue_wait_seconds", "Time queued requests waited for a slot", ["model"],
            buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.refused = Counter(
            "llamafleet_gateway_refused_total",
            "Requests refused while all replicas were busy (queue_full, tenant_queue_full, shed, objective: "
            "429 at once; queue_timeout: 429 after waiting; cold_start_timeout: 503)",
            ["model", "why"], registry=registry,
        )  # fmt: skip
        # Per tenant (an API key's team, docs/BALANCER.md): who waits, who is admitted, who is refused.
        self.tenant_queued = Gauge(
            "llamafleet_gateway_tenant_queued", "Requests of a tenant waiting for a slot", ["tenant"],
            registry=registry,
        )  # fmt: skip
        self.tenant_admitted = Counter(
            "llamafleet_gateway_tenant_admitted_total", "Requests of a tenant given a slot", ["tenant"],
            registry=registry,
        )  # fmt: skip
        self.tenant_refused = Counter(
            "llamafleet_gateway_tenant_refused_total",
            "Requests of a tenant refused while replicas were busy, by the refused_total reasons",
            ["tenant", "why"], registry=registry,
        )  # fmt: skip
        self.preemptions = Counter(
            "llamafleet_gateway_preemptions_total",
            "Requests sent to an engine past its slots to suspend a request of a tenant over its share, "
            "by model and that tenant",
            ["model", "tenant"], registry=registry,
        )  # fmt: skip
        self.tenant_wait_seconds = Histogram(
            "llamafleet_gateway_tenant_wait_seconds", "Time a tenant's requests waited for a slot (0: none)",
            ["tenant"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self._tenants: set[str] = set()
        self.controlplane_connected = Gauge(
            "llamafleet_gateway_controlplane_connected",
            "1 while the routing-table stream from the control plane is up and settled", registry=registry,
        )  # fmt: skip
        self.routes_stale = Gauge(
            "llamafleet_gateway_routing_table_stale",
            "1 while serving from the last routing table because the control plane is unreachable",
            registry=registry,
        )  # fmt: skip
        self.redis_up = Gauge(
            "llamafleet_gateway_redis_up",
            "1 while the balancer's shared state in Redis is reachable; 0: balancing on own counts only",
            registry=registry,
        )  # fmt: skip
        self.retries = Counter(
            "llamafleet_gateway_retries_total", "Requests retried on another replica before the first byte",
            ["model"], registry=registry,
        )  # fmt: skip
        # Per API key, by its name (never the key): what each team uses and when it is held back.
        self.key_requests = Counter(
            "llamafleet_gateway_key_requests_total", "Requests by API key name, model and HTTP status",
            ["key", "model", "status"], registry=registry,
        )  # fmt: skip
        self.key_tokens = Counter(
            "llamafleet_gateway_key_tokens_total", "Tokens (prompt + completion) charged to an API key",
            ["key", "model"], registry=registry,
        )  # fmt: skip
        self.key_refused = Counter(
            "llamafleet_gateway_key_refused_total",
            "Requests refused for a key: unauthenticated (401), admin or forbidden (403), quota (429)",
            ["key", "why"], registry=registry,
        )  # fmt: skip

    def tenant(self, name: str) -> str:
        """A tenant's label: its name, for the first ``TENANT_LABELS`` tenants seen, then ``other`` (a
        tenant named by a trusted header is a client's string: it must not grow series without end)."""
        if name in self._tenants:
            return name
        if len(self._tenants) < TENANT_LABELS:
            self._tenants.add(name)
            return name
        return "other"

"""Every metric the gateway exports, defined in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


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
            "Replica choices by policy and reason (prefix-owner: the replica that served the prefix)",
            ["policy", "reason"], registry=registry,
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
            "Requests refused while all replicas were busy (queue_full: 429, queue_timeout: 503)",
            ["model", "why"], registry=registry,
        )  # fmt: skip
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

"""Every metric the engine process exports, defined in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "llamafleet_engine_requests_total",
            "Requests finished, by endpoint and outcome (ok, invalid, cancelled, error)",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.generated_tokens = Counter(
            "llamafleet_engine_generated_tokens_total", "Tokens generated", registry=self.registry
        )
        self.prompt_tokens = Counter(
            "llamafleet_engine_prompt_tokens_total", "Prompt tokens processed", registry=self.registry
        )
        self.request_seconds = Histogram(
            "llamafleet_engine_request_duration_seconds",
            "Time from request to last token",
            ["endpoint"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.busy_slots = Gauge(
            "llamafleet_engine_busy_slots", "Slots generating now", registry=self.registry
        )
        self.queue_depth = Gauge(
            "llamafleet_engine_queue_depth", "Requests waiting for a slot", registry=self.registry
        )

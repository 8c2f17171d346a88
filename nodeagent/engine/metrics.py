"""Every metric the engine process exports, defined in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llamafleet_engine_requests_total",
            "Requests finished, by endpoint and outcome (ok, invalid, cancelled, error)",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "llamafleet_engine_request_duration_seconds",
            "Time from request to last token",
            ["endpoint"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.generated_tokens = Counter(
            "llamafleet_engine_generated_tokens_total", "Tokens generated", registry=r
        )
        self.prompt_tokens = Counter(
            "llamafleet_engine_prompt_tokens_total", "Prompt tokens in admitted requests", registry=r
        )
        self.prompt_cache_hit_tokens = Counter(
            "llamafleet_engine_prompt_cache_hit_tokens_total",
            "Prompt tokens served from a slot's KV cache instead of being prefilled",
            registry=r,
        )
        self.prompt_cache_copies = Counter(
            "llamafleet_engine_prompt_cache_copies_total",
            "Prompts started from a shared prefix copied out of another slot's KV cells",
            registry=r,
        )
        self.prompt_cache_saved = Counter(
            "llamafleet_engine_prompt_cache_saved_total",
            "Slot states saved to host memory before a new prompt overwrote them (--cache-ram)",
            registry=r,
        )
        self.prompt_cache_restored_tokens = Counter(
            "llamafleet_engine_prompt_cache_restored_tokens_total",
            "Prompt tokens restored from states saved in host memory (part of the cache hit tokens)",
            registry=r,
        )
        self.prompt_cache_host_bytes = Gauge(
            "llamafleet_engine_prompt_cache_host_bytes",
            "Host memory held by saved prompt states (at most --cache-ram)",
            registry=r,
        )
        self.preempted = Counter(
            "llamafleet_engine_preempted_total",
            "Running requests suspended (cells saved to host memory) for another tenant's request the "
            "gateway let preempt them",
            registry=r,
        )
        self.steps_stopped = Counter(
            "llamafleet_engine_decode_steps_stopped_total",
            "Decode steps stopped part-way for a preempting request and taken back (redone next step)",
            registry=r,
        )
        self.suspended = Gauge(
            "llamafleet_engine_suspended_requests", "Requests suspended now, waiting to resume", registry=r
        )
        self.tokens_per_second = Gauge(
            "llamafleet_engine_generation_tokens_per_second",
            "Generated tokens per second over the last 10 seconds of busy time",
            registry=r,
        )
        self.threads = Gauge(
            "llamafleet_engine_threads", "CPU threads llama.cpp computes with (the agent's share)", registry=r
        )
        self.busy_slots = Gauge("llamafleet_engine_busy_slots", "Slots serving a request now", registry=r)
        self.slots = Gauge("llamafleet_engine_slots", "Slots (parallel sequences) of this engine", registry=r)
        self.queue_depth = Gauge(
            "llamafleet_engine_queue_depth", "Requests waiting for a free slot", registry=r
        )
        self.kv_cells_used = Gauge(
            "llamafleet_engine_kv_cells_used", "KV cache cells holding tokens, over all slots", registry=r
        )
        self.kv_cells = Gauge("llamafleet_engine_kv_cells", "KV cache cells in all", registry=r)
        self.step_seconds = Histogram(
            "llamafleet_engine_decode_step_seconds",
            "Wall time of one batched llama_decode step",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.step_tokens = Histogram(
            "llamafleet_engine_decode_step_tokens",
            "Tokens carried by one decode step (decoding sequences plus prefill chunks)",
            buckets=(1, 2, 4, 8, 16, 64, 256, 512, 2048),
            registry=r,
        )
        self.draft_tokens = Counter(
            "llamafleet_engine_speculative_draft_tokens_total",
            "Tokens drafted by speculative decoding (n-gram prompt lookup) and sent for verification",
            registry=r,
        )
        self.accepted_tokens = Counter(
            "llamafleet_engine_speculative_accepted_tokens_total",
            "Drafted tokens the model's own sampling agreed with (acceptance rate: this over drafted)",
            registry=r,
        )
        self.speculative_step_tokens = Histogram(
            "llamafleet_engine_speculative_step_tokens",
            "Tokens one sequence got from one step that verified a draft (1: the draft was all rejected)",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16),
            registry=r,
        )
        self.rejected = Counter(
            "llamafleet_engine_rejected_total",
            "Requests refused before running, by reason (queue_full, too_long)",
            ["reason"],
            registry=r,
        )

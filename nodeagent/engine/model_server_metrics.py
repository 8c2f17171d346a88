"""The metrics the Gateway API Inference Extension's endpoint picker reads from a model server (GIE's
model-server protocol, docs/proposals/003-model-server-protocol), under the names its picker reads
for vLLM, its default engine — so an InferencePool of llamafleet engines works with GIE's own picker
(or llm-d's) unconfigured, beside our ``llamafleet_engine_*`` series:

- ``vllm:num_requests_waiting`` (TotalQueuedRequests): requests submitted and not in a slot, with
  suspended ones (vLLM counts its preempted requests as waiting);
- ``vllm:num_requests_running`` (TotalRunningRequests): requests in a slot (the busy slots of /slots);
- ``vllm:kv_cache_usage_perc`` and its older name ``vllm:gpu_cache_usage_perc`` (KVCacheUtilization,
  a fraction 0–1 despite the name): KV cells holding tokens over all cells (/slots' cached tokens
  over slots × context);
- ``vllm:lora_requests_info`` (LoRA affinity): value the time of the reading (the picker takes the
  latest), labels ``running_lora_adapters`` (adapters loaded and ready to serve, comma-separated),
  ``waiting_lora_adapters`` (adapters of waiting requests) and ``max_lora`` — the number loaded: an
  engine serves only the adapters it has loaded (the agent loads those of the Model's spec), so a
  pod never has room for an adapter it lacks and GIE's picker sends it only requests it can serve.

The first four carry ``model_name`` as vLLM's do. Read at scrape time from the batcher's last step
(``Batcher.load``), so they agree with /slots and /metrics' own series. Not exported:
``vllm:cache_config_info`` (block size): llama.cpp's cache is per token, and a block size of 1 would
make GIE's prefix scorer hash every token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class ServingLoad:
    """What one engine is doing, as of the batcher's last step."""

    running: int = 0
    waiting: int = 0
    kv_cells_used: int = 0
    kv_cells: int = 0
    waiting_adapters: tuple[str, ...] = ()
    prompt_cache_bytes: int = 0  # host memory its saved prompt states hold (at most --cache-ram)


class ModelServerMetrics(Collector):
    def __init__(
        self, model_name: str, load: Callable[[], ServingLoad], adapters: Callable[[], list[str]]
    ) -> None:
        self._model = model_name
        self._load = load
        self._adapters = adapters

    def collect(self) -> Iterator[GaugeMetricFamily]:
        load = self._load()
        kv = _fraction(load)
        gauges = (
            ("vllm:num_requests_waiting", "Requests waiting for a slot, suspended ones too", load.waiting),
            ("vllm:num_requests_running", "Requests in a slot", load.running),
            ("vllm:kv_cache_usage_perc", "KV cache cells in use, as a fraction (0-1)", kv),
            ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc under vLLM's older name", kv),
        )
        for name, text, value in gauges:
            family = GaugeMetricFamily(name, f"{text} (GIE model-server protocol)", labels=["model_name"])
            family.add_metric([self._model], value)
            yield family
        loaded = sorted(self._adapters())
        lora = GaugeMetricFamily(
            "vllm:lora_requests_info",
            "LoRA adapters ready and waited for; value: when read (GIE model-server protocol)",
            labels=["max_lora", "running_lora_adapters", "waiting_lora_adapters"],
        )
        waiting = ",".join(sorted(set(load.waiting_adapters)))
        lora.add_metric([str(len(loaded)), ",".join(loaded), waiting], time.time())
        yield lora

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # read at scrape time: nothing to check when registered


def _fraction(load: ServingLoad) -> float:
    return load.kv_cells_used / load.kv_cells if load.kv_cells else 0.0

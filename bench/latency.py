"""Timing one request and reading percentiles: shared by the latency benchmarks."""

from __future__ import annotations

import time
from typing import Any

import httpx


def timed(client: httpx.Client, url: str, body: dict[str, Any]) -> float:
    """Seconds for one POST of ``body`` to ``url``, to the last byte; raises on a non-2xx answer."""
    started = time.perf_counter()
    response = client.post(url, json=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]

"""Timing one request and reading percentiles: shared by the latency benchmarks."""

from __future__ import annotations

import itertools
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


def streamed(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, list[float]]:
    """One streamed POST: seconds to the first token's event, and the gaps between the token events
    after it, as the client reads them (what a chat UI shows)."""
    started = time.perf_counter()
    arrivals: list[float] = []
    with client.stream("POST", url, json=body | {"stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                arrivals.append(time.perf_counter())
    if not arrivals:
        raise RuntimeError(f"{url}: no events in the stream")
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return arrivals[0] - started, gaps


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]

"""Benchmark: the latency the gateway adds to a request, against the same engine called directly.

    .venv/bin/python bench/gateway_overhead.py [--requests 300]

Starts `llamafleet up` with SmolLM2 (one replica), then alternates the same tiny request
(max_tokens 1, a short prompt the engine's prompt cache keeps) straight to the engine and
through the gateway (filter → policy → pick, proxy), each over its own keep-alive connection.
Reports p50/p90 of both, the added p50 and the ratio. Target (issue 5): added p50 ≤ 2 ms.
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import SMOLLM2_YAML, start_cluster, stop_cluster

BODY = {"model": "smollm2-135m", "max_tokens": 1, "temperature": 0,
        "messages": [{"role": "user", "content": "Say yes."}]}  # fmt: skip


def timed(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    response = client.post(url, json=BODY)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests each way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = start_cluster(Path(tmp), SMOLLM2_YAML, ["smollm2-135m"])
        try:
            (model,) = [m for m in cluster.models_json() if m["name"] == "smollm2-135m"]
            engine = str(model["replicas"][0]["endpoint"])  # type: ignore[index]
            direct_url = f"{engine}/v1/chat/completions"
            gateway_url = f"{cluster.base_url}/v1/chat/completions"
            direct, gateway = [], []
            with httpx.Client(timeout=60) as to_engine, httpx.Client(timeout=60) as to_gateway:
                for _ in range(10):  # warm both paths and the engine's prompt cache
                    timed(to_engine, direct_url)
                    timed(to_gateway, gateway_url)
                for i in range(args.requests):
                    if i % 2:
                        direct.append(timed(to_engine, direct_url))
                        gateway.append(timed(to_gateway, gateway_url))
                    else:
                        gateway.append(timed(to_gateway, gateway_url))
                        direct.append(timed(to_engine, direct_url))
        finally:
            stop_cluster(cluster)
    d50, g50 = statistics.median(direct), statistics.median(gateway)
    result = {
        "bench": "gateway_overhead",
        "requests_each": args.requests,
        "direct_p50_ms": round(1000 * d50, 2),
        "gateway_p50_ms": round(1000 * g50, 2),
        "direct_p90_ms": round(1000 * percentile(direct, 0.9), 2),
        "gateway_p90_ms": round(1000 * percentile(gateway, 0.9), 2),
        "added_p50_ms": round(1000 * (g50 - d50), 2),
        "ratio_p50": round(g50 / d50, 3),
        "target_added_p50_ms": 2.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

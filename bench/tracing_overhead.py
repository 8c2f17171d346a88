"""Benchmark: what OpenTelemetry tracing costs the gateway, off (the default) and on.

    .venv/bin/python bench/tracing_overhead.py [--requests 300]

Starts `llamafleet up` with SmolLM2 (one replica) and two standalone `llamafleet gateway` processes
watching its control plane: one as users run it (no OTEL_* variables: tracing off), one exporting
every request's spans over OTLP/HTTP to a receiver this script runs (OTEL_EXPORTER_OTLP_ENDPOINT,
the batch processor's defaults). Alternates the same tiny request (max_tokens 1, a prompt the
engine's cache keeps) straight to the engine and through each gateway, over kept connections, and
reports each p50/p90 and what tracing on adds to the p50.

Off, the request path runs one ``tracing.tracer() is not None`` check in the gateway, one in the
engine, and reads two more headers: too little to see against a request's noise here, so that code
is timed on its own (timeit) and set against the gateway's own p50 cost (gateway − direct).
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gateway_overhead import BODY, ready
from bench.latency import percentile, timed
from llamafleet.core import tracing
from llamafleet.security.engine_auth import engine_headers
from nodeagent.supervisor.process import free_port
from tests.support.cluster import SMOLLM2_YAML, start_cluster, stop_cluster
from tests.support.otlp_receiver import otlp_receiver
from tests.support.process_cluster import engine_endpoint
from tests.support.processes import cluster_pki
from tests.support.wait import wait_until


def off_path_seconds() -> float:
    """The tracing-off work one request does (gateway and engine checks, the two extra header reads)."""
    headers = {"content-type": "application/json", "authorization": "Bearer x", "x-session-id": "s"}

    def request() -> None:
        tracing.tracer() is not None  # noqa: B015 (the gateway's check)
        tracing.tracer() is not None  # noqa: B015 (the engine's)
        headers.get("traceparent")
        headers.get("tracestate")

    runs = 200_000
    return min(timeit.repeat(request, number=runs, repeat=5)) / runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests each way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, otlp_receiver() as (receiver, received):
        cluster = start_cluster(Path(tmp), SMOLLM2_YAML, ["smollm2-135m"])
        gateways: dict[str, subprocess.Popen[bytes]] = {}
        try:
            engine = engine_endpoint(cluster.grpc, cluster.tmp)
            urls = {"direct": f"{engine.url}/v1/chat/completions"}
            for name, extra in (("off", {}), ("on", {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver})):
                port = free_port("127.0.0.1")
                env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | extra
                gateways[name] = subprocess.Popen(
                    [sys.executable, "-m", "llamafleet.cli.main", "gateway", "--port", str(port),
                     "--controlplane", cluster.grpc, "--gateway-id", f"bench-{name}",
                     "--log-level", "WARNING", "--tls-dir", str(cluster_pki(cluster.tmp) / "gateway")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env,
                )  # fmt: skip
                urls[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
                wait_until(lambda url=urls[name]: ready(url), 60, f"the gateway with tracing {name}")
            samples: dict[str, list[float]] = {name: [] for name in urls}
            clients = {name: httpx.Client(timeout=60) for name in urls}
            clients["direct"].headers.update(engine_headers(engine.secret))
            # Every request carries a client's trace context, so all three send the engine the same bytes
            # (off, the gateway passes it through; on, it names its own span): a request a header
            # shorter meets this machine's 40 ms delayed-ACK stall (bench/gateway_overhead.py).
            for client in clients.values():
                client.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            try:
                for _ in range(10):
                    for name, url in urls.items():
                        timed(clients[name], url, BODY)
                order = list(urls)
                for i in range(args.requests):
                    turn = i % len(order)
                    for name in order[turn:] + order[:turn]:
                        samples[name].append(timed(clients[name], urls[name], BODY))
            finally:
                for client in clients.values():
                    client.close()
        finally:
            for process in gateways.values():
                process.terminate()
                process.wait(timeout=30)
            stop_cluster(cluster)
        spans = len(received.spans)
    p50 = {name: statistics.median(values) for name, values in samples.items()}
    off_cost = off_path_seconds()
    result = {
        "bench": "tracing_overhead",
        "requests_each": args.requests,
        **{f"{name}_p50_ms": round(1000 * value, 3) for name, value in p50.items()},
        **{f"{name}_p90_ms": round(1000 * percentile(samples[name], 0.9), 3) for name in samples},
        "on_added_p50_ms": round(1000 * (p50["on"] - p50["off"]), 3),
        "on_over_off_p50": round(p50["on"] / p50["off"], 3),
        "spans_received": spans,
        "off_path_us": round(1e6 * off_cost, 4),
        "off_share_of_gateway_cost": round(off_cost / max(p50["off"] - p50["direct"], 1e-9), 6),
        "target_off_share": 0.01,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

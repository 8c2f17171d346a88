"""Benchmark: what authentication costs per request through the gateway.

    .venv/bin/python bench/security_overhead.py [--requests 300]

Starts `llamafleet up` with SmolLM2 (one replica; its engine requires its replica secret, its
gRPC is mutual TLS) and four standalone gateways on its control plane, each presenting the
gateway certificate:

- ``open``: no API keys (the baseline: no key check, no quota), balancer state in the process;
- ``keys``: a keys file; the request's key is hashed and looked up, its model scope checked, and
  its requests and tokens per minute counted in the gateway (quotas set high enough never to refuse);
- ``open_redis``: no keys, balancer state in a real Redis (as gateway replicas share it);
- ``keys_redis``: keys, with balancer state and quotas in that Redis (one Lua call before the
  request; the tokens are added after the response, off its path).

The same tiny request (max_tokens 1) goes round the four, each over its own keep-alive
connection, starting order rotated. Reports p50/p90 and the p50 keys add (``keys`` over ``open``,
``keys_redis`` over ``open_redis``); the target (issue 16) is ≤ 1 ms added p50. TLS is on the
gRPC control channel only (routing table, agent streams), so no request pays a handshake; the
engine's secret check is in every path.
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import percentile, timed
from controlplane.gateway.access.api_keys import hash_key
from nodeagent.supervisor.process import free_port
from tests.support.cluster import SMOLLM2_YAML, start_cluster, stop_cluster
from tests.support.processes import cluster_pki
from tests.support.redis_server import redis_server
from tests.support.wait import wait_until

KEY = "lf-bench-key-0123456789abcdef0123456789"
BODY = {"model": "smollm2-135m", "max_tokens": 1, "temperature": 0,
        "messages": [{"role": "user", "content": "Say yes."}]}  # fmt: skip


def gateway(grpc: str, tmp: Path, name: str, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port("127.0.0.1")
    process = subprocess.Popen(
        [sys.executable, "-m", "llamafleet.cli.main", "gateway", "--port", str(port), "--controlplane", grpc,
         "--gateway-id", name, "--log-level", "WARNING", "--tls-dir", str(cluster_pki(tmp) / "gateway"),
         *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}/v1/chat/completions"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests each way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        keys = tmp / "keys.yaml"
        entry = {"name": "bench", "sha256": hash_key(KEY), "models": ["smollm2-*"],
                 "requestsPerMinute": 10**9, "tokensPerMinute": 10**12}  # fmt: skip
        keys.write_text(yaml.safe_dump({"keys": [entry]}))
        cluster = start_cluster(tmp, SMOLLM2_YAML, ["smollm2-135m"])
        processes = []
        try:
            with redis_server(tmp) as redis_url:
                urls = {}
                variants: dict[str, tuple[str, ...]] = {
                    "open": (),
                    "keys": ("--keys-file", str(keys)),
                    "open_redis": ("--redis-url", redis_url),
                    "keys_redis": ("--keys-file", str(keys), "--redis-url", redis_url),
                }
                for label, flags in variants.items():
                    process, url = gateway(cluster.grpc, tmp, label, *flags)
                    processes.append(process)
                    urls[label] = url
                clients = {label: httpx.Client(timeout=60, headers={"authorization": f"Bearer {KEY}"})
                           for label in urls}  # fmt: skip

                def ready(label: str) -> bool:
                    try:
                        return clients[label].post(urls[label], json=BODY).status_code == 200
                    except httpx.HTTPError:
                        return False

                for label in urls:
                    wait_until(lambda label=label: ready(label), 60, f"the {label} gateway")  # type: ignore[misc]
                samples: dict[str, list[float]] = {label: [] for label in urls}
                for _ in range(10):  # warm every path and the engine's prompt cache
                    for label, url in urls.items():
                        timed(clients[label], url, BODY)
                order = list(urls)
                for i in range(args.requests):
                    for label in order[i % 4 :] + order[: i % 4]:  # rotate who goes first
                        samples[label].append(timed(clients[label], urls[label], BODY))
                for client in clients.values():
                    client.close()
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
            stop_cluster(cluster)
    p50 = {label: statistics.median(values) for label, values in samples.items()}
    result = {
        "bench": "security_overhead",
        "requests_each": args.requests,
        **{f"{label}_p50_ms": round(1000 * p50[label], 3) for label in samples},
        **{f"{label}_p90_ms": round(1000 * percentile(samples[label], 0.9), 3) for label in samples},
        "keys_added_p50_ms": round(1000 * (p50["keys"] - p50["open"]), 3),
        "keys_redis_added_p50_ms": round(1000 * (p50["keys_redis"] - p50["open_redis"]), 3),
        "ratio_keys_p50": round(p50["keys"] / p50["open"], 3),
        "ratio_keys_redis_p50": round(p50["keys_redis"] / p50["open_redis"], 3),
        "target_added_p50_ms": 1.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

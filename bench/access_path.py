"""Benchmark: what the gateway's access path costs per request, in-process (issue 28's target: ≤ 1 ms).

    .venv/bin/python bench/access_path.py [--requests 20000]

The path a request takes before it is forwarded, run by the gateway's own code on a real ASGI scope:
the access guard (key lookup by SHA-256, admin routes, the keyless mode's cross-site checks), the
key's model and ``lora`` adapter scopes, the request's token reservation and the quota's admission
(counted in-process, as without Redis), and the settling when the response ends. Timed against the
same guard with no keys (the baseline run in the same script), so the figure is what keys add.
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from starlette.types import Message, Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.gateway.access.api_keys import KeyRing, hash_key
from controlplane.gateway.access.guard import AccessGuard
from controlplane.gateway.access.quota import Quotas
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.routers.inference import adapters_asked
from controlplane.gateway.usage import reservation
from llamafleet.protocol.openai import ChatCompletionRequest

KEY = "lf-bench-access-key-0123456789abcdef"
BODY = {"model": "smollm2-135m", "max_tokens": 16, "lora": [{"name": "tone"}],
        "messages": [{"role": "user", "content": "Say yes, briefly, please."}]}  # fmt: skip
RAW = json.dumps(BODY).encode()


def scope(key: str) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json")]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "client": ("127.0.0.1", 5000),
            "headers": headers}  # fmt: skip


async def one(guard: AccessGuard, quotas: Quotas, key_header: str, body: ChatCompletionRequest) -> float:
    """One request's access path; returns its seconds."""
    seen: list[Any] = []

    async def app(s: Scope, receive: Receive, send: Send) -> None:
        seen.append(s["state"]["api_key"])

    async def receive() -> Message:
        return {"type": "http.request", "body": RAW}

    async def send(message: Message) -> None:
        raise AssertionError(f"refused: {message}")

    guard.app = app  # the route behind the guard: here, only what it leaves on the scope
    started = time.perf_counter()
    await guard(scope(key_header), receive, send)
    key = seen[0]
    key.require(body.model)
    for adapter in adapters_asked(body):
        key.require(f"{body.model}:{adapter}")
    reserved = await quotas.admit(key, reservation(RAW, body) if key.tokens_per_minute else 0)
    quotas.charge_tokens(key, 40, reserved)
    return time.perf_counter() - started


async def none(scope: Scope, receive: Receive, send: Send) -> None:
    """Replaced per request by ``one``."""


async def run(requests: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys.yaml"
        entry = {"name": "bench", "sha256": hash_key(KEY), "models": ["smollm2-135m", "smollm2-135m:*"],
                 "requestsPerMinute": 10**9, "tokensPerMinute": 10**12}  # fmt: skip
        keys.write_text(yaml.safe_dump({"keys": [entry]}))
        body = ChatCompletionRequest.model_validate(BODY)
        keyed_quotas, open_quotas = Quotas(), Quotas()
        keyed = AccessGuard(none, KeyRing(keys, []), GatewayMetrics(CollectorRegistry()))
        keyless = AccessGuard(none, KeyRing(None, []), GatewayMetrics(CollectorRegistry()))
        samples: dict[str, list[float]] = {"keyless": [], "keyed": []}
        both = (("keyless", keyless, open_quotas, ""), ("keyed", keyed, keyed_quotas, KEY))
        for i in range(requests + 200):  # alternate who goes first; the first 200 of each a warm-up
            for name, guard, quotas, header in both[:: 1 if i % 2 else -1]:
                seconds = await one(guard, quotas, header, body)
                if i >= 200:
                    samples[name].append(seconds)
        await keyed_quotas.close()
        await open_quotas.close()
    return {name: statistics.median(values) for name, values in samples.items()} | {
        f"{name}_p90": sorted(values)[int(0.9 * len(values))] for name, values in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000, help="requests each way")
    args = parser.parse_args()
    found = asyncio.run(run(args.requests))
    result = {
        "bench": "access_path",
        "requests_each": args.requests,
        "keyless_p50_us": round(1e6 * found["keyless"], 1),
        "keyed_p50_us": round(1e6 * found["keyed"], 1),
        "keyless_p90_us": round(1e6 * found["keyless_p90"], 1),
        "keyed_p90_us": round(1e6 * found["keyed_p90"], 1),
        "keys_add_p50_us": round(1e6 * (found["keyed"] - found["keyless"]), 1),
        "target_access_path_p50_us": 1000.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

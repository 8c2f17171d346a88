"""Benchmark: one team's flood against another team's interactive requests, fair queuing against FIFO.

    .venv/bin/python bench/fairness.py [--duration 40] [--flood 64] [--max-tokens 16]

One embedded cluster (``llamafleet up``), one SmolLM2 replica with 2 slots, a keys file with two
keys. Tenant A floods: ``--flood`` clients, each sending its next request as soon as the last ends.
Tenant B is interactive: one client, one request at a time, half a second of thinking between them.
Every request streams ``--max-tokens`` tokens of a short chat (the same prompt, so the engine's cache
is no factor). Phases, each ``--duration`` seconds, in one run:

- ``b_alone``: B by itself (its TTFT without competition);
- ``a_alone``: A by itself (the capacity A gets with no one else);
- ``fifo``: A and B together, both keys in one tenant — first come, first served, as every request
  waited before tenants existed (B queues behind A's whole backlog);
- ``fair``: A and B together as two tenants (weights 1 and 1): fair queuing.

Reported: B's TTFT p50/p90 per phase and its p90 over ``b_alone`` (goal ≤ 1.5× in ``fair``); A's
generated tokens per second and A's share of what B left (A's tokens/s over A-alone's minus B's
tokens/s in the phase; goal ≥ 0.95); 429s. The gateway's queue timeout is raised to 300 s so that
A's backlog (62 waiting on 2 slots) is measured as a wait rather than refused. The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.gateway.access.api_keys import hash_key  # noqa: E402
from tests.support.cluster import start_cluster, stop_cluster  # noqa: E402

KEY_A, KEY_B = "lf-bench-tenant-a", "lf-bench-tenant-b"
ADMIN = "lf-bench-admin"  # the readiness poll's (a plain --gateway-api-keys key)
MODELS = """models:
  - name: smollm2-135m
    source: builtin:smollm2-135m
    parallelSlots: 2
"""


def keys_file(path: Path, fair: bool) -> None:
    keys = [{"name": "a", "sha256": hash_key(KEY_A), "tenant": "a" if fair else "shared"},
            {"name": "b", "sha256": hash_key(KEY_B), "tenant": "b" if fair else "shared"}]  # fmt: skip
    path.write_text(yaml.safe_dump({"keys": keys}))


@dataclass
class Tally:
    ttft: list[float] = field(default_factory=list)
    tokens: int = 0
    refused: int = 0
    errors: int = 0


async def one(client: httpx.AsyncClient, url: str, max_tokens: int, tally: Tally, until: float) -> None:
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Name a colour."}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    started = time.monotonic()
    first = 0.0
    tokens = 0
    async with client.stream("POST", url, json=body) as response:
        if response.status_code == 429:
            tally.refused += 1
            await asyncio.sleep(1)
            return
        if response.status_code != 200:
            tally.errors += 1
            await asyncio.sleep(1)
            return
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if not first and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                first = time.monotonic() - started
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    if time.monotonic() <= until:  # only requests that ended inside the phase count
        tally.ttft.append(first)
        tally.tokens += tokens


async def client_loop(url: str, key: str, max_tokens: int, until: float, tally: Tally, think: float) -> None:
    async with httpx.AsyncClient(timeout=600, headers={"authorization": f"Bearer {key}"}) as client:
        while time.monotonic() < until:
            await one(client, url, max_tokens, tally, until)
            if think:
                await asyncio.sleep(think)


async def phase(url: str, flood: int, b: bool, duration: float, max_tokens: int) -> dict[str, Any]:
    until = time.monotonic() + duration
    a_tally, b_tally = Tally(), Tally()
    loops = [client_loop(url, KEY_A, max_tokens, until, a_tally, 0.0) for _ in range(flood)]
    if b:
        loops.append(client_loop(url, KEY_B, max_tokens, until, b_tally, 0.5))
    await asyncio.gather(*loops)
    out: dict[str, Any] = {}
    for name, tally in (("a", a_tally), ("b", b_tally)):
        if not tally.ttft and not tally.refused:
            continue
        ttft = sorted(tally.ttft)
        out[name] = {
            "requests": len(ttft),
            "tokens_per_s": round(tally.tokens / duration, 2),
            "ttft_p50_s": round(statistics.median(ttft), 3) if ttft else None,
            "ttft_p90_s": round(ttft[int(0.9 * (len(ttft) - 1))], 3) if ttft else None,
            "refused_429": tally.refused,
            "errors": tally.errors,
        }
    return out


async def run(url: str, keys: Path, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    results["b_alone"] = await phase(url, 0, True, args.duration, args.max_tokens)
    results["a_alone"] = await phase(url, args.flood, False, args.duration, args.max_tokens)
    for name, fair in (("fifo", False), ("fair", True)):
        keys_file(keys, fair)
        await asyncio.sleep(2.5)  # the gateway re-reads the keys file within a second of a change
        results[name] = await phase(url, args.flood, True, args.duration, args.max_tokens)
        print(name, json.dumps(results[name]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=40.0, help="seconds per phase")
    parser.add_argument("--flood", type=int, default=64, help="tenant A's concurrent clients")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        keys = tmp / "keys.yaml"
        keys_file(keys, fair=True)
        flags = ("--gateway-keys-file", str(keys), "--gateway-queue-timeout-s", "300")
        cluster = start_cluster(tmp, MODELS, ["smollm2-135m"], flags, api_key=ADMIN)
        try:
            results = asyncio.run(run(f"{cluster.base_url}/v1/chat/completions", keys, args))
        finally:
            stop_cluster(cluster)
    b_alone = results["b_alone"]["b"]["ttft_p90_s"]
    a_alone = results["a_alone"]["a"]["tokens_per_s"]
    summary: dict[str, Any] = {"bench": "fairness", "duration_s": args.duration, "flood": args.flood,
                               "max_tokens": args.max_tokens, "slots": 2, **results}  # fmt: skip
    for name in ("fifo", "fair"):
        row = results[name]
        summary[f"{name}_b_p90_over_alone"] = round(row["b"]["ttft_p90_s"] / b_alone, 2)
        left = a_alone - row["b"]["tokens_per_s"]
        summary[f"{name}_a_share_of_what_b_left"] = round(row["a"]["tokens_per_s"] / left, 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

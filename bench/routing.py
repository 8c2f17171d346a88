"""Benchmark: the gateway's balancing policies on a multi-turn chat workload, 3 real SmolLM2 replicas.

    .venv/bin/python bench/routing.py [--conversations 12] [--turns 4] [--rate 0.8] [--arrival staggered]

Starts `llamafleet up` with one model of 3 replicas (1 thread each), then for each policy
(round-robin, least-load, session, prefix-affinity) sets the model's `balancer` in the models
file and replays the same kind of workload with fresh texts: conversations that grow turn by
turn (each turn resends the whole history plus a new question), each opening with ~350 words of
its own, in groups sharing one of three ~150-word system prompts, streamed, 32 tokens each.
Requests come at a fixed average rate: by default conversations arrive one every TURNS/RATE
seconds and each sends its next turn THINK_S after the previous answer (steady state, as users
arrive); `--arrival burst` is the first version's schedule (every conversation ready at once, a
ready one started every 1/RATE s, so the run opens with all opening turns back to back).
Reports mean and p90 time to first token (and the mean over follow-up turns alone, the only
ones routing can serve from cache), completion tokens per second over the run, and where each
request went. Targets (issue 5):
prefix-affinity mean TTFT ≤ 0.5× round-robin's, throughput ≥ 1.0×. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.gateway.proxy import REPLICA_HEADER
from tests.support import oneshot
from tests.support.cluster import start_cluster, stop_cluster
from tests.support.wait import wait_until

POLICIES = ("round-robin", "least-load", "session", "prefix-affinity")
MODEL = "smol"
WORDS = [
    "river",
    "mountain",
    "engine",
    "harbor",
    "lantern",
    "orchard",
    "silver",
    "copper",
    "meadow",
    "canyon",
    "glacier",
    "beacon",
    "violet",
    "ember",
    "quartz",
    "willow",
    "falcon",
    "tundra",
    "marble",
    "cedar",
    "summit",
    "prairie",
    "delta",
    "comet",
]


def models_yaml(policy: str) -> str:
    return f"""
models:
  - name: {MODEL}
    source: builtin:smollm2-135m
    replicas: 3
    contextLength: 4096
    parallelSlots: 4
    threads: 1
    shareCpus: true
    balancer: {policy}
"""


def system_prompt(rng: random.Random, index: int) -> str:
    facts = " ".join(rng.choice(WORDS) for _ in range(150))
    return f"You are assistant number {index} of a travel desk. Background notes: {facts}. Answer briefly."


def document(rng: random.Random, index: int) -> str:
    """The conversation's own long opening message: what only this conversation's replica has cached."""
    notes = " ".join(rng.choice(WORDS) for _ in range(350))
    return f"Here are my trip notes, number {index}: {notes}. Keep them in mind."


@dataclass
class Turn:
    ttft: float
    tokens: int
    text: str
    replica: str
    prompt_tokens: int
    cached_tokens: int


async def one_turn(client: httpx.AsyncClient, base: str, messages: list[dict[str, str]], user: str) -> Turn:
    body = {"model": MODEL, "messages": messages, "max_tokens": 32, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "user": user}  # fmt: skip
    started = time.perf_counter()
    ttft, tokens, text, prompt, cached = 0.0, 0, [], 0, 0
    async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        replica = response.headers.get(REPLICA_HEADER, "?")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if usage := chunk.get("usage"):
                tokens, prompt = usage["completion_tokens"], usage["prompt_tokens"]
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece and not ttft:
                    ttft = time.perf_counter() - started
                text.append(piece)
    return Turn(ttft, tokens, "".join(text), replica, prompt, cached)


async def workload(base: str, policy: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(f"{args.seed}-{policy}")  # fresh texts per policy: no cache carried over
    systems = [system_prompt(rng, i) for i in range(3)]
    conversations = [
        [{"role": "system", "content": systems[i % 3]}, {"role": "user", "content": document(rng, i)},
         {"role": "assistant", "content": "Noted."}]
        for i in range(args.conversations)
    ]  # fmt: skip
    turns_left = [args.turns] * args.conversations
    busy = [False] * args.conversations
    ttfts: list[float] = []
    follow_ups: list[float] = []  # turns after the first: the only ones routing can serve from cache
    placed: dict[int, list[str]] = {i: [] for i in range(args.conversations)}
    trace: list[dict[str, Any]] = []
    tokens = 0
    tasks: set[asyncio.Task[None]] = set()

    async def run(i: int, client: httpx.AsyncClient) -> None:
        nonlocal tokens
        topic = f"{rng.choice(WORDS)} {rng.choice(WORDS)}"
        question = f"Question {args.turns - turns_left[i] + 1}: tell me about the {topic}."
        conversations[i].append({"role": "user", "content": question})
        sent = time.perf_counter() - started
        turn = await one_turn(client, base, conversations[i], f"conv-{i}")
        conversations[i].append({"role": "assistant", "content": turn.text})
        ttfts.append(turn.ttft)
        if turns_left[i] < args.turns:
            follow_ups.append(turn.ttft)
        tokens += turn.tokens
        placed[i].append(turn.replica)
        trace.append({"policy": policy, "conversation": i, "turn": args.turns - turns_left[i] + 1,
                      "sent_s": round(sent, 3), "ttft_s": round(turn.ttft, 3), "replica": turn.replica,
                      "prompt_tokens": turn.prompt_tokens, "cached_tokens": turn.cached_tokens})  # fmt: skip
        turns_left[i] -= 1
        busy[i] = False

    async def user(i: int, client: httpx.AsyncClient) -> None:  # staggered: arrives, then turn after turn
        await asyncio.sleep(i * args.turns / args.rate)
        for turn in range(args.turns):
            if turn:
                await asyncio.sleep(args.think_s)
            await run(i, client)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=300) as client:
        if args.arrival == "staggered":
            await asyncio.gather(*(user(i, client) for i in range(args.conversations)))
        turn = 0
        while any(turns_left) or tasks:  # burst: every conversation is ready at the start
            ready = [i for i in range(args.conversations) if turns_left[i] and not busy[i]]
            if ready:
                i = ready[turn % len(ready)]
                turn += 1
                busy[i] = True
                task = asyncio.create_task(run(i, client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(1.0 / args.rate)
        elapsed = time.perf_counter() - started
    ttfts.sort()
    sticky = sum(1 for replicas in placed.values() if len(set(replicas)) == 1)
    return {
        "requests": len(ttfts),
        "ttft_mean_s": round(statistics.mean(ttfts), 3),
        "ttft_p90_s": round(ttfts[int(0.9 * (len(ttfts) - 1))], 3),
        "follow_up_ttft_mean_s": round(statistics.mean(follow_ups), 3),
        "tokens_per_s": round(tokens / elapsed, 2),
        "wall_s": round(elapsed, 1),
        "conversations_on_one_replica": f"{sticky}/{args.conversations}",
        "requests_per_replica": dict(Counter(r for rs in placed.values() for r in rs)),
        "trace": trace,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.8, help="requests started per second (on average)")
    parser.add_argument(
        "--arrival",
        choices=("staggered", "burst"),
        default="staggered",
        help="staggered: conversations arrive one every TURNS/RATE seconds, each turn sent THINK_S after "
        "the previous answer; burst: every conversation is ready at the start and a ready one is started "
        "every 1/RATE seconds (the first 12 requests are all opening turns)",
    )
    parser.add_argument(
        "--think-s", type=float, default=2.0, help="staggered: pause between an answer and the next turn"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help="comma-separated; the ratios need round-robin and prefix-affinity",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        help="write every request (conversation, turn, replica, TTFT, cached tokens) here as JSON lines",
    )
    args = parser.parse_args()
    results: dict[str, Any] = {"bench": "routing"}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = start_cluster(Path(tmp), models_yaml(POLICIES[0]), [MODEL])
        models_file = Path(tmp) / "models.yaml"
        try:

            def replicas_ready(policy: str) -> bool:
                (model,) = oneshot.get(f"{cluster.base_url}/v1/models", timeout=5).json()["data"]
                info = model["llamafleet"]
                return bool(info["ready_replicas"] == 3 and info["balancer"] == policy)

            for policy in args.policies.split(","):
                models_file.write_text(models_yaml(policy))
                wait_until(functools.partial(replicas_ready, policy), 300, f"3 ready replicas under {policy}")
                results[policy] = asyncio.run(workload(cluster.base_url, policy, args))
                trace = results[policy].pop("trace")
                if args.trace:
                    with args.trace.open("a") as out:
                        out.writelines(json.dumps(record) + "\n" for record in trace)
                print(policy, results[policy], flush=True)
        finally:
            stop_cluster(cluster)
    if "round-robin" not in results or "prefix-affinity" not in results:
        print(json.dumps(results))
        return
    baseline, affinity = results["round-robin"], results["prefix-affinity"]
    results["prefix_affinity_vs_round_robin"] = {
        "ttft_mean_ratio": round(affinity["ttft_mean_s"] / baseline["ttft_mean_s"], 3),
        "ttft_p90_ratio": round(affinity["ttft_p90_s"] / baseline["ttft_p90_s"], 3),
        "follow_up_ttft_mean_ratio": round(
            affinity["follow_up_ttft_mean_s"] / baseline["follow_up_ttft_mean_s"], 3
        ),
        "throughput_ratio": round(affinity["tokens_per_s"] / baseline["tokens_per_s"], 3),
        "targets": {"ttft_mean_ratio": "<= 0.5", "throughput_ratio": ">= 1.0"},
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()

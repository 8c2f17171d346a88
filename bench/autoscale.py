"""Autoscaling under a load stepping 1 → 8 → 1 clients, against the same model kept at its maximum.

    .venv/bin/python bench/autoscale.py [--phase-s 30] [--max-replicas 3]

Two runs on `llamafleet up` (SmolLM2, 2 slots per replica, 1 thread): an autoscaled model starting
at zero (minReplicas 0, maxReplicas N) and a fixed deployment of N replicas (the baseline). Each
client streams completions back to back. Reported:
- from zero: the first request's time to its first token, split into placement (replica created →
  placed on a node), engine start (placed → the agent reports it starting), load (starting →
  ready) and first token (ready → the client's first token), from the control plane's view polled
  every 100 ms;
- requests failed (target 0) out of all sent, in both runs;
- replica-seconds used (replicas that exist, summed over time) by each, and their ratio;
- p90 time to first token during the ramp (the first phase at 8 clients) for each, and their ratio;
- every scaling decision with its reason.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.domain import ModelStatusView, ReplicaPhase
from tests.support import oneshot
from tests.support.cluster import start_cluster, stop_cluster
from tests.support.processes import admin_client
from tests.support.wait import wait_until

SCALED = re.compile(r"model \S+: scaling (?:up|down) from (\d+) to (\d+) replica\(s\): (.*)")


@dataclass
class Timeline:
    """Each replica's first sighting per phase, and the model's replica count over time."""

    seen: dict[str, dict[str, float]] = field(default_factory=dict)  # replica → phase → time
    counts: list[tuple[float, int]] = field(default_factory=list)

    def note(self, now: float, view: ModelStatusView) -> None:
        self.counts.append((now, len(view.replicas)))
        for r in view.replicas:
            marks = self.seen.setdefault(r.replica_id, {"created": now})
            if r.node_id:
                marks.setdefault("placed", now)
            if r.phase in (ReplicaPhase.STARTING, ReplicaPhase.READY):
                marks.setdefault("starting", now)
            if r.phase == ReplicaPhase.READY:
                marks.setdefault("ready", now)

    def replica_seconds(self, start: float, end: float) -> float:
        inside = [(t, n) for t, n in self.counts if start <= t <= end]
        return sum(n * (t2 - t1) for (t1, n), (t2, _) in itertools.pairwise(inside))


@dataclass
class Outcome:
    sent: int = 0
    failed: list[str] = field(default_factory=list)
    ttft: list[tuple[float, float]] = field(default_factory=list)  # (when sent, seconds to first token)


async def client(url: str, model: str, until: float, outcome: Outcome) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        while time.monotonic() < until:
            sent = time.monotonic()
            outcome.sent += 1
            body = {"model": model, "prompt": f"Story {sent}: once upon a time", "max_tokens": 32,
                    "stream": True, "temperature": 0}  # fmt: skip
            try:
                async with http.stream("POST", "/v1/completions", json=body) as response:
                    if response.status_code != 200:
                        outcome.failed.append(f"{response.status_code}: {(await response.aread())[:200]!r}")
                        continue
                    first = None
                    async for line in response.aiter_lines():
                        if first is None and line.startswith("data: {"):
                            first = time.monotonic() - sent
                    if first is not None:
                        outcome.ttft.append((sent, first))
            except httpx.HTTPError as exc:
                outcome.failed.append(f"{type(exc).__name__}: {exc}")


async def watch(cluster_grpc: str, tmp: Path, model: str, timeline: Timeline, stop: asyncio.Event) -> None:
    admin = admin_client(cluster_grpc, tmp)
    try:
        while not stop.is_set():
            views = [m for m in await admin.list_models() if m.name == model]
            if views:
                timeline.note(time.monotonic(), views[0])
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def drive(url: str, grpc: str, tmp: Path, model: str, phase_s: float) -> dict[str, Any]:
    timeline, outcome, stop = Timeline(), Outcome(), asyncio.Event()
    watcher = asyncio.create_task(watch(grpc, tmp, model, timeline, stop))
    await asyncio.sleep(0.5)
    start = time.monotonic()
    ramp = (start + phase_s, start + 2 * phase_s)
    end = start + 3 * phase_s
    clients = [asyncio.create_task(client(url, model, end, outcome))]  # 1 client throughout
    await asyncio.sleep(phase_s)
    more = [asyncio.create_task(client(url, model, ramp[1], outcome)) for _ in range(7)]  # 8 in all
    await asyncio.gather(*clients, *more)
    stop.set()
    await watcher
    ramp_ttft = sorted(s for t, s in outcome.ttft if ramp[0] <= t < ramp[1])
    first = min(outcome.ttft, default=(start, float("nan")))
    return {
        "timeline": timeline,
        "start": start,
        "end": end,
        "first_answer_s": first[1],
        "requests": outcome.sent,
        "failed": len(outcome.failed),
        "failures": outcome.failed[:5],
        "replica_seconds": timeline.replica_seconds(start, end),
        "p90_ttft_ramp_s": statistics.quantiles(ramp_ttft, n=10)[-1]
        if len(ramp_ttft) >= 10
        else float("nan"),
    }


def from_zero_phases(result: dict[str, Any]) -> dict[str, float]:
    """The first replica's cold start, phase by phase (control plane's view, ±0.1 s)."""
    timeline: Timeline = result["timeline"]
    firsts = [m for m in timeline.seen.values() if "ready" in m]
    if not firsts:
        return {}
    marks = min(firsts, key=lambda m: m["ready"])
    start = result["start"]
    return {
        "placement_s": round(marks.get("placed", marks["created"]) - marks["created"], 2),
        "engine_start_s": round(
            marks.get("starting", marks["ready"]) - marks.get("placed", marks["created"]), 2
        ),
        "load_s": round(marks["ready"] - marks.get("starting", marks["ready"]), 2),
        "first_token_s": round(start + result["first_answer_s"] - marks["ready"], 2),
        "request_to_replica_created_s": round(marks["created"] - start, 2),
    }


def run(tmp: Path, autoscaling: str, replicas: int, phase_s: float) -> tuple[dict[str, Any], list[str]]:
    yaml = (f"models:\n  - name: m\n    source: builtin:smollm2-135m\n    replicas: {replicas}\n"
            f"    contextLength: 512\n    parallelSlots: 2\n    threads: 1\n    shareCpus: true\n"
            f"{autoscaling}")  # fmt: skip
    tmp.mkdir(parents=True)
    cluster = start_cluster(tmp, yaml, [] if autoscaling else ["m"])
    try:
        wait_until(
            lambda: "m" in oneshot.get(f"{cluster.base_url}/v1/models", timeout=5).text, 60, "the model"
        )
        result = asyncio.run(drive(cluster.base_url, cluster.grpc, tmp, "m", phase_s))
        decisions = [f"{m[1]}→{m[2]}: {m[3]}" for m in SCALED.finditer(cluster.log())]
    finally:
        stop_cluster(cluster)
    return result, decisions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phase-s", type=float, default=30.0, help="seconds at 1, then 8, then 1 clients")
    parser.add_argument("--max-replicas", type=int, default=3)
    args = parser.parse_args()
    n = args.max_replicas
    policy = (f"    autoscaling: {{minReplicas: 0, maxReplicas: {n}, stableWindow: 20s, panicWindow: 4s, "
              f"scaleDownDelay: 10s, idleTimeout: 5m}}\n")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="autoscale-") as work:
        scaled, decisions = run(Path(work) / "scaled", policy, 0, args.phase_s)
        fixed, _ = run(Path(work) / "fixed", "", n, args.phase_s)
    report = {
        "bench": "autoscale",
        "phase_s": args.phase_s,
        "max_replicas": n,
        "from_zero": {"first_answer_s": round(scaled["first_answer_s"], 2), **from_zero_phases(scaled)},
        "requests": {"autoscaled": scaled["requests"], "fixed": fixed["requests"]},
        "failed": {"autoscaled": scaled["failed"], "fixed": fixed["failed"]},
        "failures": scaled["failures"] + fixed["failures"],
        "replica_seconds": {
            "autoscaled": round(scaled["replica_seconds"], 1),
            "fixed": round(fixed["replica_seconds"], 1),
            "ratio": round(scaled["replica_seconds"] / fixed["replica_seconds"], 3),
        },
        "p90_ttft_ramp_s": {
            "autoscaled": round(scaled["p90_ttft_ramp_s"], 3),
            "fixed": round(fixed["p90_ttft_ramp_s"], 3),
            "ratio": round(scaled["p90_ttft_ramp_s"] / fixed["p90_ttft_ramp_s"], 3),
        },
        "decisions": decisions,
    }
    for key in ("from_zero", "requests", "failed", "replica_seconds", "p90_ttft_ramp_s"):
        print(f"{key}: {report[key]}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()

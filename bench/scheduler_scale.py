"""Benchmark: placing 1,000 models on 1,000 nodes with the scheduler (filters → scorers → pick).

    .venv/bin/python bench/scheduler_scale.py [--nodes 1000] [--models 1000] [--seed 7]

Nodes are drawn from the machine fixtures (tests/unit/controlplane/fixtures/machines.json: CPU
boxes of 8–128 GiB, GPU boxes with 1×24, 2×8 and 1×4 GiB), each holding a few of the model files;
models are llama-shaped profiles from 0.5 to ~40 GiB with 1 replica each, contexts 2k–16k.
One reconcile pass places them all, as after a control-plane restart; the pass is repeated
``--repeat`` times with every memoized graph, buffer and curve forgotten before each (cold), since
one pass on this shared machine varies by half. Prints the median and best pass, the time per
placement and how many were placed, then one JSON line. The issue's target: all in ≤ 1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.domain import ModelSpec
from controlplane.reconciler import Reconciler
from controlplane.scheduler.framework import Scheduler
from controlplane.state.cluster import ClusterState
from tests.support.machines import machine_types, node_from
from tests.support.profiles import llama_like


def clear_memory_model_caches() -> None:
    """Forget every memoized graph, buffer and curve, so each pass starts cold."""
    for name, module in list(sys.modules.items()):
        if name.startswith(("llamafleet.fit", "controlplane.scheduler")):
            for value in vars(module).values():
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()


def one_pass(args: argparse.Namespace) -> tuple[float, int, int]:
    """A cold reconcile pass over a fresh cluster: seconds, replicas placed, replicas in all."""
    rng = random.Random(args.seed)
    kinds = machine_types()
    names = sorted(kinds)
    profiles = {}
    specs = []
    for i in range(args.models):
        n_layer = rng.choice([16, 24, 32, 40, 48, 64, 80])
        layer_mib = rng.choice([20, 50, 100, 200, 400])
        source = f"/models/m{i}.gguf"
        profiles[source] = llama_like(n_layer=n_layer, layer_mib=layer_mib, tied=rng.random() < 0.3)
        context = rng.choice([2048, 4096, 8192, 16384])
        slots = rng.choice([1, 2, 4])
        strategy = rng.choice(["spread", "binpack"])
        specs.append(
            ModelSpec(
                name=f"m{i}", source=source, context_length=context, parallel_slots=slots, placement=strategy
            )
        )
    state = ClusterState()
    sources = list(profiles)
    for i in range(args.nodes):
        held = {s: profiles[s] for s in rng.sample(sources, k=3)}
        node = node_from(f"node-{i:04d}", kinds[rng.choice(names)], held)
        state.nodes[node.node_id] = node
    state.set_models(specs)
    for node in state.nodes.values():
        node.models_reported = True
    reconciler = Reconciler(state, Scheduler(), node_grace_s=30)
    clear_memory_model_caches()
    started = time.perf_counter()
    reconciler.reconcile()
    elapsed = time.perf_counter() - started
    placed = sum(1 for r in state.replicas.values() if r.node_id)
    return elapsed, placed, len(state.replicas)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5, help="cold passes (caches cleared before each)")
    args = parser.parse_args()
    runs = [one_pass(args) for _ in range(args.repeat)]
    times = sorted(elapsed for elapsed, _, _ in runs)
    _, placed, replicas = runs[-1]
    median = statistics.median(times)
    result = {
        "bench": "scheduler_scale",
        "nodes": args.nodes,
        "models": args.models,
        "placed": placed,
        "pending": replicas - placed,
        "passes_s": [round(t, 3) for t in (elapsed for elapsed, _, _ in runs)],
        "total_s_median": round(median, 3),
        "total_s_best": round(times[0], 3),
        "per_placement_ms_median": round(1000 * median / max(replicas, 1), 3),
        "target_total_s": 1.0,
    }
    print(
        f"placed {placed} of {replicas} replicas on {args.nodes} nodes: median {median:.3f} s, "
        f"best {times[0]:.3f} s over {len(times)} cold passes"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Benchmark: 1,000 Model objects reconciled by the operator against the Kubernetes API emulator.

    .venv/bin/python bench/operator_scale.py [--models 1000] [--nodes 50]

The emulator (tests/support/kubeapi) runs as its own process. The Models are created first
(``kubectl apply`` would do the same POSTs); then a control plane becomes leader in this process
with ``--nodes`` synthetic 128 GiB CPU nodes that hold the model file (no agents: replicas stay
placed, not started) and the clock runs until every Model in the API server has a status with
``observedGeneration`` equal to its ``metadata.generation`` and a ``Placed`` condition. Counted:
the seconds, and the API writes the operator made per Model (finalizer, status, Events), from the
emulator's own write counters. A second phase changes every Model's spec (generation 2) and
measures the same again.

Baseline, in the same run: the same number of writes made by a bare HTTP client (aiohttp, same
concurrency as the operator's API workers) with no reconcile logic: the API server's own floor on
this machine. ``ratio_to_floor`` is operator seconds / floor seconds. Targets (issue 12): all
1,000 in ≤ 10 s, ≤ 3 writes per Model. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.operator.kube import Kube
from controlplane.operator.operator import ModelOperator
from controlplane.reconciler import Reconciler
from controlplane.scheduler.framework import Scheduler
from controlplane.settings import KubernetesSettings
from controlplane.state.cluster import ClusterState
from nodeagent.supervisor.process import free_port
from tests.support.kubeapi import kube_api
from tests.support.machines import machine_types, node_from
from tests.support.profiles import llama_like

MODELS = "/apis/llamafleet.io/v1alpha1/namespaces/default/models"
SOURCE = "/models/small.gguf"


def manifest(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "llamafleet.io/v1alpha1", "kind": "Model", "metadata": {"name": f"model-{i:04d}"},
        # Every Model asks for its own context length, so no two share a memory-fit answer.
        "spec": {"source": SOURCE, "replicas": 1, "contextLength": 512 + 8 * i, "parallelSlots": 1},
    }  # fmt: skip


async def create_all(url: str, count: int, workers: int) -> None:
    async with aiohttp.ClientSession(url) as http:
        queue = list(range(count))

        async def worker() -> None:
            while queue:
                async with http.post(MODELS, json=manifest(queue.pop())) as response:
                    assert response.status == 201, await response.text()

        await asyncio.gather(*(worker() for _ in range(workers)))


async def writes(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession(url) as http, http.get("/emulator/writes") as response:
        counts: dict[str, int] = await response.json()
        return counts


async def settled_writes(url: str) -> dict[str, int]:
    """The write counts once they stop moving for a second (Events trail the statuses)."""
    last = await writes(url)
    while True:
        await asyncio.sleep(1.0)
        now = await writes(url)
        if now == last:
            return now
        last = now


async def reset_writes(url: str) -> None:
    async with aiohttp.ClientSession(url) as http, http.post("/emulator/reset-writes"):
        pass


async def all_reconciled(url: str, count: int) -> bool:
    async with aiohttp.ClientSession(url) as http, http.get(MODELS) as response:
        items = (await response.json())["items"]
    done = 0
    for obj in items:
        status = obj.get("status") or {}
        placed = any(c.get("type") == "Placed" for c in status.get("conditions") or [])
        done += placed and status.get("observedGeneration") == obj["metadata"]["generation"]
    return done == count


async def wait_reconciled(url: str, count: int, started: float) -> float:
    while True:  # polled: a full list of 1,000 objects costs the API server too, so not too often
        if await all_reconciled(url, count):
            return time.monotonic() - started
        await asyncio.sleep(0.25)


async def floor(url: str, writes_total: int, workers: int) -> float:
    """Seconds for a bare client to make ``writes_total`` status patches: the API server's own cost."""
    body = {"status": {"observedGeneration": 1, "conditions": []}}
    headers = {"Content-Type": "application/merge-patch+json"}
    names = [f"model-{i:04d}" for i in range(writes_total)]
    started = time.monotonic()
    async with aiohttp.ClientSession(url) as http:

        async def worker() -> None:
            while names:
                name = names.pop()
                index = int(name.rsplit("-", 1)[1])
                target = f"{MODELS}/model-{index % 1000:04d}/status"
                async with http.patch(target, data=json.dumps(body), headers=headers) as response:
                    assert response.status == 200, await response.text()

        await asyncio.gather(*(worker() for _ in range(workers)))
    return time.monotonic() - started


async def run(args: argparse.Namespace, api_url: str, kubeconfig: Path) -> dict[str, Any]:
    await create_all(api_url, args.models, 16)
    await reset_writes(api_url)
    state = ClusterState(settle_s=0)
    held = {SOURCE: llama_like(n_layer=16, layer_mib=20)}
    for i in range(args.nodes):
        state.nodes[f"node-{i:03d}"] = node_from(f"node-{i:03d}", machine_types()["cpu-128g"], held)
    settings = KubernetesSettings(kubeconfig=kubeconfig, api_workers=args.workers)
    kube = Kube(settings)
    operator = ModelOperator(kube, state, settings)
    reconciler = Reconciler(state, Scheduler(), node_grace_s=30)
    stop = asyncio.Event()
    started = time.monotonic()
    async with asyncio.TaskGroup() as group:
        group.create_task(operator.run(stop))
        group.create_task(reconciler.run(stop))
        first_s = await wait_reconciled(api_url, args.models, started)
        first = await settled_writes(api_url)  # late writes (Events) still count
        await reset_writes(api_url)
        # Phase 2: every spec changes (generation 2); the operator must catch up again.
        started = time.monotonic()
        async with aiohttp.ClientSession(api_url) as http:
            headers = {"Content-Type": "application/merge-patch+json"}
            for i in range(args.models):
                patch = json.dumps({"spec": {"contextLength": 520 + 8 * i}})
                async with http.patch(f"{MODELS}/model-{i:04d}", data=patch, headers=headers) as response:
                    assert response.status == 200
        second_s = await wait_reconciled(api_url, args.models, started)
        second = await settled_writes(api_url)
        stop.set()
    kube.close()
    ops = {k: v for k, v in first.items() if not k.startswith("create models")}
    total_first = sum(ops.values())
    total_second = sum(v for k, v in second.items() if not k.startswith("patch models") or "/status" in k)
    floor_s = await floor(api_url, total_first, args.workers)
    return {
        "bench": "operator_scale",
        "models": args.models,
        "nodes": args.nodes,
        "api_workers": args.workers,
        "reconciled_s": round(first_s, 3),
        "writes_per_model": round(total_first / args.models, 3),
        "writes": ops,
        "spec_change_reconciled_s": round(second_s, 3),
        "spec_change_writes_per_model": round(total_second / args.models, 3),
        "floor_s_same_writes_bare_client": round(floor_s, 3),
        "ratio_to_floor": round(first_s / floor_s, 2),
        "target_s": 10.0,
        "target_writes_per_model": 3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8, help="the operator's concurrent API calls")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        kube_api(Path(tmp), free_port("127.0.0.1"), history=200_000) as api,
    ):
        result = asyncio.run(run(args, api.url, api.kubeconfig))
    print(
        f"{result['models']} Models placed and reported in {result['reconciled_s']} s with "
        f"{result['writes_per_model']} API writes per Model ({result['writes']}); after a spec change on "
        f"all: {result['spec_change_reconciled_s']} s, "
        f"{result['spec_change_writes_per_model']} writes per Model; "
        f"a bare client needs {result['floor_s_same_writes_bare_client']} s for the same writes"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

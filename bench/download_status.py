"""Benchmark: how often the operator writes Model statuses while their replicas download (issue 34).

    .venv/bin/python bench/download_status.py [--models 100] [--seconds 60]

The Kubernetes API emulator (tests/support/kubeapi) in its own process; 100 Models, each one replica
placed on a synthetic node (no agents), as bench/operator_scale.py sets them up. Then every replica
downloads its file for ``--seconds``: each second its record gets what an agent's report brings
(phase starting, ``downloading N% (…)``, the bytes so far), 0 to 100% over the run, then it turns
ready. Counted from the emulator's write counters: status writes per Model during the download.
Baseline in the same run: the same downloads with the pacing off (PROGRESS_S and PROGRESS_STEP 0:
every report written, as before issue 34). Target: at most one write per 5 s and per 5% of a file,
whichever is later (≤ 12 per minute's download, plus the phase changes). Prints one JSON line last.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.operator_scale import create_all, reset_writes, settled_writes, wait_reconciled
from controlplane.domain import ReplicaPhase
from controlplane.operator import operator as operator_module
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

SOURCE = "/models/small.gguf"
SIZE = 400 * 2**20


async def run(models: int, seconds: int, api_url: str, kubeconfig: Path, paced: bool) -> dict[str, Any]:
    operator_module.PROGRESS_S, operator_module.PROGRESS_STEP = (5.0, 0.05) if paced else (0.0, 0.0)
    await create_all(api_url, models, 16)
    state = ClusterState(settle_s=0)
    held = {SOURCE: llama_like(n_layer=16, layer_mib=20)}
    for i in range(10):
        state.nodes[f"node-{i:03d}"] = node_from(f"node-{i:03d}", machine_types()["cpu-128g"], held)
    settings = KubernetesSettings(kubeconfig=kubeconfig, api_workers=8)
    kube = Kube(settings)
    operator = ModelOperator(kube, state, settings)
    reconciler = Reconciler(state, Scheduler(), node_grace_s=3600)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(operator.run(stop))
        group.create_task(reconciler.run(stop))
        await wait_reconciled(api_url, models, time.monotonic())
        await settled_writes(api_url)
        await reset_writes(api_url)
        started = time.monotonic()
        for second in range(seconds + 1):  # an agent's report a second, every replica
            share = second / seconds
            for replica in state.replicas.values():
                replica.phase = ReplicaPhase.STARTING
                rate = SIZE / seconds
                replica.message = (f"downloading {100 * share:.0f}% ({share * SIZE / 2**20:.1f} MiB of "
                                   f"{SIZE / 2**20:.1f} MiB, {rate / 2**20:.1f} MiB/s)")  # fmt: skip
                replica.download = (int(share * SIZE), SIZE, rate)
            state.bump()
            await asyncio.sleep(max(0.0, started + second + 1 - time.monotonic()))
        for replica in state.replicas.values():
            replica.phase, replica.message, replica.download = ReplicaPhase.READY, "", (0, 0, 0.0)
        state.bump()
        counts = await settled_writes(api_url)
        stop.set()
    kube.close()
    status = sum(v for k, v in counts.items() if "/status" in k)
    return {"status_writes_per_model": round(status / models, 2), "writes": counts}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=60, help="how long each download takes")
    args = parser.parse_args()
    rows = {}
    for name, paced in (("every_report", False), ("paced", True)):
        with tempfile.TemporaryDirectory() as tmp, kube_api(Path(tmp), free_port("127.0.0.1")) as api:
            rows[name] = asyncio.run(run(args.models, args.seconds, api.url, api.kubeconfig, paced))
        print(
            f"download_status: {name}: {rows[name]['status_writes_per_model']} status writes per Model",
            flush=True,
        )
    result = {
        "bench": "download_status",
        "models": args.models,
        "download_s": args.seconds,
        "every_report_writes_per_model": rows["every_report"]["status_writes_per_model"],
        "paced_writes_per_model": rows["paced"]["status_writes_per_model"],
        "paced_writes_per_second": round(
            rows["paced"]["status_writes_per_model"] * args.models / args.seconds, 2
        ),
        "every_report_writes_per_second": round(
            rows["every_report"]["status_writes_per_model"] * args.models / args.seconds, 2
        ),
        "reduction": round(
            rows["every_report"]["status_writes_per_model"]
            / max(rows["paced"]["status_writes_per_model"], 0.01),
            2,
        ),
        "target_paced_writes_per_model": round(args.seconds / 5 + 2, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

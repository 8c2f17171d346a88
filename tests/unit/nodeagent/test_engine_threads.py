"""The supervisor's share of the node's CPUs: which replicas count, and which run on the GPU alone."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

from llamafleet.contract.replica import ReplicaSpec
from nodeagent.domain import Phase
from nodeagent.settings import SupervisorSettings
from nodeagent.supervisor.replica import EngineReplica
from nodeagent.supervisor.supervisor import Supervisor


def replica(tmp: Path, replica_id: str, gpu: bool = False, **spec: object) -> EngineReplica:
    settings = SupervisorSettings(data_dir=tmp)
    made = ReplicaSpec(replica_id, "m", "/models/m.gguf", **spec)  # type: ignore[arg-type]
    return EngineReplica(made, 1, settings, lambda: None, node_has_gpu=gpu)


def test_gpu_mode_needs_a_gpu_and_every_layer_on_it(tmp_path: Path) -> None:
    assert not replica(tmp_path, "a", gpu=False, n_gpu_layers=-1).gpu_mode  # -1 on a CPU node: CPU mode
    assert replica(tmp_path, "b", gpu=True, n_gpu_layers=-1).gpu_mode
    partial = replica(tmp_path, "c", gpu=True, n_gpu_layers=20)
    assert not partial.gpu_mode  # layer count unknown until the header is read
    partial._header = SimpleNamespace(block_count=30)  # type: ignore[assignment]
    assert not partial.gpu_mode  # 20 of 30 layers: the rest computes on the CPU
    partial._header = SimpleNamespace(block_count=19)  # type: ignore[assignment]
    assert partial.gpu_mode  # 19 blocks and the output layer


def test_the_supervisor_shares_cpus_among_live_replicas(tmp_path: Path) -> None:
    supervisor = Supervisor(SupervisorSettings(data_dir=tmp_path), lambda: None, cpus=8, gpus=True)
    replicas = {
        "a-auto": replica(tmp_path, "a-auto", gpu=True, n_gpu_layers=0),
        "b-asked": replica(tmp_path, "b-asked", gpu=True, n_gpu_layers=0, n_threads=3),
        "c-gpu": replica(tmp_path, "c-gpu", gpu=True, n_gpu_layers=-1),
        "d-auto": replica(tmp_path, "d-auto", gpu=True, n_gpu_layers=0),
        "e-failed": replica(tmp_path, "e-failed", gpu=True, n_gpu_layers=0),
        "f-stopping": replica(tmp_path, "f-stopping", gpu=True, n_gpu_layers=0),
    }
    failed = replicas["e-failed"]
    failed._state = dataclasses.replace(failed.state, phase=Phase.FAILED)
    replicas["f-stopping"].stop.set()
    supervisor._replicas = dict(replicas)  # type: ignore[assignment]
    supervisor._share_cpus()
    threads = {name: r.threads for name, r in replicas.items() if name[0] in "abcd"}
    assert threads == {"a-auto": 2, "b-asked": 3, "c-gpu": 1, "d-auto": 2}  # 8 − 3 − 1 = 4 for two
    del supervisor._replicas["d-auto"]
    supervisor._share_cpus()
    assert replicas["a-auto"].threads == 4  # the share grows when a replica goes

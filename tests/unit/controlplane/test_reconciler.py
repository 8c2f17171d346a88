"""Replicas: count, spread, re-placement after node loss or engine failure, pending with reasons or a plan."""

from __future__ import annotations

import itertools
import time

from controlplane.domain import ModelSpec, NodeStatus, ReplicaPhase, ReplicaRecord, ReplicaReport, serves
from controlplane.reconciler import Reconciler
from controlplane.scheduler.framework import Scheduler, reservations
from controlplane.scheduler.split import SplitPart, on_gpu
from controlplane.state import views
from controlplane.state.cluster import ClusterState
from llamafleet.contract.replica import Role
from llamafleet.fit.estimate import GPU_RUNTIME_OVERHEAD
from llamafleet.fit.recommend import Gpu
from tests.support.machines import machine_types, node_from
from tests.support.profiles import llama_like

SMALL = llama_like(n_layer=16, layer_mib=50)
BIG = llama_like()
MACHINES = machine_types()


def cluster(*nodes: str, models: dict[str, object] | None = None) -> tuple[ClusterState, Reconciler]:
    state = ClusterState()
    held = {"/m/small.gguf": SMALL, "/m/big.gguf": BIG}
    for entry in nodes:
        name, kind = entry.split(":")
        state.nodes[name] = node_from(name, MACHINES[kind], held)  # type: ignore[arg-type]
    return state, Reconciler(state, Scheduler(), node_grace_s=0.0)


def placements(state: ClusterState, model: str) -> list[str | None]:
    return sorted((r.node_id for r in state.replicas.values() if r.model == model), key=str)


def test_three_replicas_spread_over_three_nodes_and_scale_down_drops_one() -> None:
    state, reconciler = cluster("a:cpu-64g", "b:cpu-64g", "c:cpu-64g")
    spec = ModelSpec(name="small", source="/m/small.gguf", replicas=3, parallel_slots=1)
    state.set_models([spec])
    reconciler.reconcile()
    assert placements(state, "small") == ["a", "b", "c"]  # replica-spread: one per node
    state.set_models([spec.model_copy(update={"replicas": 2})])
    reconciler.reconcile()
    assert len(placements(state, "small")) == 2


def test_a_lost_node_past_its_grace_period_loses_its_replicas_to_other_nodes() -> None:
    state, reconciler = cluster("a:cpu-64g", "b:cpu-64g")
    state.set_models([ModelSpec(name="small", source="/m/small.gguf", parallel_slots=1)])
    reconciler.reconcile()
    (first,) = placements(state, "small")
    lost = state.nodes[str(first)]
    lost.connected, lost.disconnected_at = False, time.monotonic() - 1
    reconciler._expire_lost_nodes()
    reconciler.reconcile()
    (now,) = placements(state, "small")
    assert now is not None
    assert now != first


def test_a_failed_engine_is_placed_again_avoiding_that_node() -> None:
    state, reconciler = cluster("a:cpu-64g", "b:cpu-64g")
    state.set_models([ModelSpec(name="small", source="/m/small.gguf", parallel_slots=1)])
    reconciler.reconcile()
    (replica,) = state.replicas.values()
    failed_on = replica.node_id
    replica.phase, replica.error, replica.message = ReplicaPhase.FAILED, "engine_crashed", "exit code -9"
    reconciler.reconcile()
    assert replica.node_id not in (None, failed_on)
    assert replica.failed_on == (failed_on,)


def test_a_replica_failing_on_its_only_node_is_retried_there_after_a_growing_pause() -> None:
    state, reconciler = cluster("a:cpu-64g")
    state.set_models([ModelSpec(name="small", source="/m/small.gguf", parallel_slots=1)])
    reconciler.reconcile()
    (replica,) = state.replicas.values()
    pauses = []
    for _ in range(3):
        replica.phase, replica.error, replica.message = ReplicaPhase.FAILED, "disk_full", "no space left"
        reconciler.reconcile()
        assert replica.node_id is None  # not straight back onto the node it failed on
        assert not reconciler._retry_due()
        pauses.append(replica.retry_at - time.monotonic())
        replica.retry_at = time.monotonic()  # the pause is over
        assert reconciler._retry_due()
        reconciler.reconcile()
        assert replica.node_id == "a"
    assert 1.5 < pauses[0] < pauses[1] < pauses[2] <= 60  # 2 s, 4 s, 8 s
    replica.phase = ReplicaPhase.READY
    reconciler.reconcile()
    assert replica.failed_on == ()  # serving again: a later failure starts from the first pause


def test_a_bad_file_is_not_moved_around() -> None:
    state, reconciler = cluster("a:cpu-64g", "b:cpu-64g")
    state.set_models([ModelSpec(name="small", source="/m/small.gguf", parallel_slots=1)])
    reconciler.reconcile()
    (replica,) = state.replicas.values()
    where = replica.node_id
    replica.phase, replica.error = ReplicaPhase.FAILED, "model_invalid"
    reconciler.reconcile()
    assert replica.node_id == where  # the same file fails the same way anywhere


def test_fits_nowhere_without_allow_split_stays_pending_with_every_reason() -> None:
    state, reconciler = cluster("a:cpu-8g", "b:cpu-8g", "c:cpu-8g")
    state.set_models([ModelSpec(name="big", source="/m/big.gguf", parallel_slots=1)])
    reconciler.reconcile()
    assert placements(state, "big") == [None]
    (view,) = views.model_views(state)
    placed = next(c for c in view.conditions if c.type == "Placed")
    assert (placed.status, placed.reason) == ("False", "NoCapacity")
    assert "a: cpu mode needs" in placed.message


def split_cluster() -> tuple[ClusterState, Reconciler, ReplicaRecord]:
    state, reconciler = cluster("a:cpu-8g", "b:cpu-8g", "c:cpu-8g")
    for node in state.nodes.values():
        node.advertise_host = f"10.0.0.{ord(node.node_id)}"
    state.set_models([ModelSpec(name="big", source="/m/big.gguf", parallel_slots=1, allow_split=True)])
    reconciler.reconcile()
    (replica,) = state.replicas.values()
    return state, reconciler, replica


def workers_ready(state: ClusterState, replica: ReplicaRecord) -> None:
    for i, part in enumerate(replica.parts):
        state.node_status(part.node_id, state.nodes[part.node_id].session, NodeStatus(
            0, state.nodes[part.node_id].ram_free_bytes, [ReplicaReport(
                part.worker_id, "big", ReplicaPhase.READY,
                f"{state.nodes[part.node_id].advertise_host}:{50052 + i}", 0, "", "")], {},
        ))  # fmt: skip


def test_fits_nowhere_alone_is_split_workers_first_then_the_head_pointed_at_them() -> None:
    state, _, replica = split_cluster()
    assert replica.node_id is not None
    assert replica.parts
    assert replica.head_layers is not None
    layers = [(p.first_layer, p.last_layer) for p in replica.parts] + [replica.head_layers]
    assert layers[0][0] == 0
    assert layers[-1][1] == BIG.n_layer - 1
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(layers))  # contiguous ranges
    assert {p.node_id for p in replica.parts}.isdisjoint({replica.node_id})
    # Until every worker is ready, the head's node is not asked to run the engine.
    assert replica.replica_id not in views.assignments_for(state, replica.node_id)[1]
    for part in replica.parts:
        worker = views.assignments_for(state, part.node_id)[1][part.worker_id]
        assert worker.role == Role.RPC_WORKER
        assert worker.lease is not None
        assert (worker.lease.head_node_id, worker.lease.head_address) == (
            replica.node_id, state.nodes[replica.node_id].advertise_host,
        )  # fmt: skip
        assert (worker.lease.first_layer, worker.lease.last_layer) == (part.first_layer, part.last_layer)
    workers_ready(state, replica)
    head = views.assignments_for(state, replica.node_id)[1][replica.replica_id]
    assert [(p.node_id, p.first_layer, p.last_layer) for p in head.remote_parts] == [
        (p.node_id, p.first_layer, p.last_layer) for p in replica.parts
    ]
    assert all(p.endpoint.startswith(f"{state.nodes[p.node_id].advertise_host}:") for p in head.remote_parts)


def test_each_split_part_goes_on_its_nodes_gpu_only_where_its_range_fits_there() -> None:
    state, _, replica = split_cluster()  # CPU-only nodes: every part in host memory, as planned
    assert not any(p.gpu for p in replica.parts)
    assert replica.n_gpu_layers == 0
    for part in replica.parts:
        assert views.assignments_for(state, part.node_id)[1][part.worker_id].n_gpu_layers == 0
    # A part whose range fits its node's first GPU (with the CUDA reserve) is served from it.
    part = SplitPart("a", 0, 9, 3 << 30, 8 << 30)
    room = part.bytes + GPU_RUNTIME_OVERHEAD
    assert on_gpu(part, (Gpu("CUDA0", room),))
    assert not on_gpu(part, (Gpu("CUDA0", room - 1),))
    assert not on_gpu(part, ())
    assert not on_gpu(part, (Gpu("RPC0", room * 2, kind="rpc"),))  # only the node's own GPUs
    replica.parts[0].gpu = True
    first = replica.parts[0]
    assert views.assignments_for(state, first.node_id)[1][first.worker_id].n_gpu_layers == -1


def test_a_split_reserves_each_parts_memory_on_its_node_until_it_is_ready() -> None:
    state, _, replica = split_cluster()
    reserved = reservations(state.replicas.values(), list(state.nodes.values()))
    for part in replica.parts:
        assert reserved[part.node_id] >= part.reserved_bytes > 0
    assert reserved[str(replica.node_id)] == replica.reserved_host_bytes > 0
    workers_ready(state, replica)
    replica.phase = ReplicaPhase.READY
    assert reservations(state.replicas.values(), list(state.nodes.values())) == {}  # now in free RAM


def test_a_crashed_worker_or_a_lost_node_takes_the_whole_split_down_and_it_is_placed_again() -> None:
    state, reconciler, replica = split_cluster()
    workers_ready(state, replica)
    replica.parts[0].phase, replica.parts[0].message = ReplicaPhase.RESTARTING, "RPC worker exited (SIGKILL)"
    reconciler.reconcile()
    assert "RPC worker" in replica.last_failure
    assert "SIGKILL" in replica.last_failure
    assert replica.replacements == 1
    assert replica.node_id is not None
    assert replica.parts
    assert all(p.phase == ReplicaPhase.ASSIGNED for p in replica.parts)  # fresh workers
    # The head's agent still reports the old head crashing: that is not the new split breaking.
    head = str(replica.node_id)
    stale = ReplicaReport(replica.replica_id, "big", ReplicaPhase.RESTARTING, "", 1, "engine_crashed",
                          "engine exited (killed by SIGABRT)")  # fmt: skip
    state.node_status(head, state.nodes[head].session, NodeStatus(0, 1 << 30, [stale], {}))
    before = [p.worker_id for p in replica.parts]
    reconciler.reconcile()
    assert [p.worker_id for p in replica.parts] == before
    assert replica.phase == ReplicaPhase.ASSIGNED
    lost = replica.parts[0].node_id
    state.nodes[lost].connected = False
    reconciler.reconcile()
    assert f"node {lost} disconnected" in replica.last_failure
    assert lost not in (replica.node_id, *(p.node_id for p in replica.parts))


def test_split_heads_and_workers_are_never_adopted() -> None:
    state, _, replica = split_cluster()
    workers_ready(state, replica)
    head = views.assignments_for(state, str(replica.node_id))[1][replica.replica_id]
    spec = state.models["big"]
    assert not serves(head, spec)
    worker = views.assignments_for(state, replica.parts[0].node_id)[1][replica.parts[0].worker_id]
    assert not serves(worker, spec)

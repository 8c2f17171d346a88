"""Replicas: count, spread, re-placement after node loss or engine failure, pending with reasons or a plan."""

from __future__ import annotations

import time

from controlplane.domain import ModelSpec, ReplicaPhase
from controlplane.reconciler import Reconciler
from controlplane.scheduler.framework import Scheduler
from controlplane.state.cluster import ClusterState
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


def test_a_bad_file_is_not_moved_around() -> None:
    state, reconciler = cluster("a:cpu-64g", "b:cpu-64g")
    state.set_models([ModelSpec(name="small", source="/m/small.gguf", parallel_slots=1)])
    reconciler.reconcile()
    (replica,) = state.replicas.values()
    where = replica.node_id
    replica.phase, replica.error = ReplicaPhase.FAILED, "model_invalid"
    reconciler.reconcile()
    assert replica.node_id == where  # the same file fails the same way anywhere


def test_fits_nowhere_stays_pending_with_every_reason_and_a_split_plan_in_the_status() -> None:
    state, reconciler = cluster("a:cpu-8g", "b:cpu-8g", "c:cpu-8g")
    state.set_models([ModelSpec(name="big", source="/m/big.gguf", parallel_slots=1, allow_split=True)])
    reconciler.reconcile()
    assert placements(state, "big") == [None]
    (view,) = state.model_views()
    placed = next(c for c in view.conditions if c.type == "Placed")
    assert placed.status == "False"
    assert placed.reason == "SplitPlanned"
    assert "a: cpu mode needs" in placed.message
    assert "split plan (not executed" in placed.message

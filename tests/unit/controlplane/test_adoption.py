"""A starting control plane adopts the replicas agents already run instead of restarting them."""

from __future__ import annotations

import time
from dataclasses import replace

from controlplane.domain import AdapterRef, ModelSpec, NodeHello, ReplicaPhase, ReplicaReport, serves
from controlplane.reconciler import Reconciler
from controlplane.scheduler.framework import Scheduler
from controlplane.state import views
from controlplane.state.cluster import ClusterState
from llamafleet.contract.replica import AdapterSpec, ReplicaSpec
from tests.support.machines import machine_types, node_from
from tests.support.profiles import llama_like

SPEC = ModelSpec(name="small", source="/m/small.gguf", replicas=2, context_length=1024, parallel_slots=2)


def running(replica_id: str, spec: ModelSpec = SPEC, phase: ReplicaPhase = ReplicaPhase.READY,
            n_gpu_layers: int = 0) -> ReplicaReport:  # fmt: skip
    assignment = ReplicaSpec(
        replica_id, spec.name, spec.source, spec.sha256, spec.context_length, spec.parallel_slots,
        n_gpu_layers, spec.threads, spec.embeddings,
        tuple(AdapterSpec(a.name, a.path, a.scale) for a in spec.adapters),
    )  # fmt: skip
    return ReplicaReport(replica_id, spec.name, phase, "http://127.0.0.1:30001", 0, "", "", (), assignment)


def hello(node_id: str, *replicas: ReplicaReport) -> NodeHello:
    return NodeHello(
        node_id, node_id, "127.0.0.1", {}, "cpu", 8, 64 << 30, 60 << 30, [], "test", list(replicas), {}
    )


def state_with_node(settle_s: float = 15.0) -> ClusterState:
    state = ClusterState(settle_s=settle_s)
    state.nodes["a"] = node_from("a", machine_types()["cpu-64g"], {"/m/small.gguf": llama_like(n_layer=16)})
    state.nodes["a"].connected = False
    return state


def test_running_replicas_matching_the_spec_are_adopted_not_recreated() -> None:
    state = state_with_node()
    state.set_models([SPEC])
    reconciler = Reconciler(state, Scheduler(), node_grace_s=30)
    reconciler.reconcile()  # no agent yet: two pending replicas, nothing placed before the state settles
    assert [r.node_id for r in state.replicas.values()] == [None, None]
    state.node_connected(hello("a", running("small-aaa"), running("small-bbb")))
    assert sorted(state.replicas) == ["small-aaa", "small-bbb"]  # the pending ones gave way
    assert all(
        r.adopted and r.node_id == "a" and r.phase == ReplicaPhase.READY for r in state.replicas.values()
    )
    reconciler.reconcile()
    _, desired = views.assignments_for(state, "a")
    assert set(desired) == {"small-aaa", "small-bbb"}  # the agent is told to keep exactly what it runs
    assert len(views.routing_table(state).ready_endpoints("small")) == 2


def test_a_replica_with_another_spec_or_beyond_the_count_is_not_adopted() -> None:
    state = state_with_node()
    state.set_models([SPEC.model_copy(update={"replicas": 1})])
    other = SPEC.model_copy(update={"context_length": 2048})
    state.node_connected(hello("a", running("small-old", other), running("small-1"), running("small-2")))
    assert list(state.replicas) == ["small-1"]
    _, desired = views.assignments_for(state, "a")
    assert set(desired) == {"small-1"}  # the others get Unassign once the state has settled


def test_nothing_is_adopted_before_the_desired_state_is_known() -> None:
    state = state_with_node()
    state.node_connected(hello("a", running("small-aaa")))
    assert state.replicas == {}
    assert not state.settled
    state.set_models([SPEC])  # the models arrive after the agent: adopted then
    assert list(state.replicas) == ["small-aaa"]


def test_gpu_layers_and_adapter_scales() -> None:
    auto = SPEC.model_copy(update={"adapters": (AdapterRef(name="tone", path="/a.gguf", scale=0.7),)})
    report = running("small-x", auto, n_gpu_layers=12)
    float32_scale = (AdapterSpec(name="tone", path="/a.gguf", scale=0.699999988079071),)
    assert report.spec is not None
    assert serves(replace(report.spec, adapters=float32_scale), auto)  # "auto": any count
    assert not serves(report.spec, auto.model_copy(update={"gpu_layers": 20}))
    assert serves(report.spec, auto.model_copy(update={"gpu_layers": 12}))


def test_the_state_settles_when_the_expected_nodes_are_back_or_after_the_grace_period() -> None:
    state = state_with_node(settle_s=0.2)
    state.expected_nodes = frozenset({"a", "b"})
    state.set_models([SPEC])
    state.node_connected(hello("a"))
    assert not state.settled  # b, which ran replicas for the last leader, is not back yet
    assert views.routing_table(state).settling
    time.sleep(0.25)
    assert state.settled
    assert not views.routing_table(state).settling

"""Rolling updates, step by step on the cluster state: surge, drain, one at a time, in place, rollback."""

from __future__ import annotations

from controlplane.domain import ModelSpec, ReplicaPhase, ReplicaRecord
from controlplane.reconciler import Reconciler
from controlplane.scheduler.fit import profile_for
from controlplane.state import views
from controlplane.state.cluster import ClusterState
from tests.unit.controlplane.test_reconciler import cluster

SPEC = ModelSpec(name="small", source="/m/small.gguf", replicas=2, parallel_slots=1, context_length=2048)


def replicas(state: ClusterState) -> list[ReplicaRecord]:
    return sorted(state.replicas.values(), key=lambda r: r.replica_id)


def settle(state: ClusterState, reconciler: Reconciler) -> list[int]:
    """Make every placed replica ready, pass by pass, until nothing changes; the ready count after each."""
    seen: list[int] = []
    for _ in range(10):
        reconciler.reconcile()
        for replica in state.replicas.values():
            if replica.node_id and replica.phase == ReplicaPhase.ASSIGNED:
                replica.phase = ReplicaPhase.READY
                break  # one at a time, as engines become ready
        seen.append(sum(1 for r in state.replicas.values() if r.phase == ReplicaPhase.READY))
    return seen


def test_a_changed_engine_parameter_rolls_out_with_a_surge_and_never_fewer_ready_replicas() -> None:
    state, reconciler = cluster("a:cpu-64g", "b:cpu-64g", "c:cpu-64g")
    state.set_models([SPEC])
    settle(state, reconciler)
    old = {r.replica_id for r in replicas(state)}
    assert len(old) == 2
    state.set_models([SPEC.model_copy(update={"context_length": 4096})])
    reconciler.reconcile()
    assert len(state.replicas) == 3  # one surge replica beside the two old ones
    (view,) = views.model_views(state)
    updated = next(c for c in view.conditions if c.type == "Updated")
    assert (updated.status, updated.reason) == ("False", "RollingUpdate")
    ready_counts = settle(state, reconciler)
    assert min(ready_counts) >= 2  # never below the desired count while it rolled
    assert len(state.replicas) == 2
    assert not old & set(state.replicas)  # every replica replaced
    assert all(r.spec.context_length == 4096 for r in state.replicas.values())
    (view,) = views.model_views(state)
    assert next(c for c in view.conditions if c.type == "Updated").status == "True"


def test_without_room_for_a_surge_it_replaces_one_at_a_time() -> None:
    state, reconciler = cluster("a:cpu-64g")
    one = SPEC.model_copy(update={"replicas": 1})
    state.set_models([one])
    reconciler.reconcile()
    (old,) = state.replicas.values()
    node = state.nodes["a"]
    need = old.reserved_host_bytes
    profile = profile_for(SPEC.source, [node])[0]
    assert profile is not None
    old.phase = ReplicaPhase.READY
    # What the agent reports with the engine loaded: no room for a second, even one that shares the
    # first one's memory-mapped weights (the same file).
    node.ram_free_bytes = (need - profile.weight_bytes) // 2
    state.set_models([one.model_copy(update={"threads": 2})])
    reconciler.reconcile()  # the surge replica cannot be placed
    assert state.pending_reasons.get("small")
    reconciler.reconcile()  # so the old one is drained to make room
    assert old.replica_id not in state.replicas
    node.ram_free_bytes = need + need // 2  # its engine stopped: the memory is back
    settle(state, reconciler)
    (new,) = state.replicas.values()
    assert (new.phase, new.spec.threads) == (ReplicaPhase.READY, 2)


def test_other_changes_apply_in_place_without_new_replicas() -> None:
    state, reconciler = cluster("a:cpu-64g", "b:cpu-64g")
    state.set_models([SPEC])
    settle(state, reconciler)
    before = set(state.replicas)
    state.set_models([SPEC.model_copy(update={"balancer": "session", "placement": "binpack"})])
    settle(state, reconciler)
    assert set(state.replicas) == before
    assert all(r.spec.balancer == "session" for r in state.replicas.values())


def test_a_rollback_mid_rollout_keeps_the_old_replicas_and_drops_the_new() -> None:
    state, reconciler = cluster("a:cpu-64g", "b:cpu-64g", "c:cpu-64g")
    state.set_models([SPEC])
    settle(state, reconciler)
    old = set(state.replicas)
    state.set_models([SPEC.model_copy(update={"context_length": 4096})])
    reconciler.reconcile()
    assert len(state.replicas) == 3
    state.set_models([SPEC])  # changed back before the new replica was ready
    settle(state, reconciler)
    assert set(state.replicas) == old  # the old replicas were never stopped


def test_a_drained_node_hands_its_replicas_over_one_surge_at_a_time_and_gets_nothing_new() -> None:
    state, reconciler = cluster("a:cpu-64g", "b:cpu-64g", "c:cpu-64g")
    state.set_models([SPEC])
    settle(state, reconciler)
    drained = next(r.node_id for r in state.replicas.values())
    assert drained is not None
    state.cordon(drained, True)
    ready_counts = settle(state, reconciler)
    assert min(ready_counts) >= 2  # each stopped only once its replacement served
    assert len(state.replicas) == 2
    assert drained not in {r.node_id for r in state.replicas.values()}
    (view,) = views.model_views(state)
    assert next(c for c in view.conditions if c.type == "Ready").status == "True"
    state.cordon(drained, False)
    settle(state, reconciler)
    assert len(state.replicas) == 2  # uncordoning moves nothing back

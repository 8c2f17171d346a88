"""First-fit placement: the first connected node with enough free RAM, and a reason for every other."""

from __future__ import annotations

from controlplane.domain import ModelSpec, NodeRecord, ReplicaPhase, ReplicaRecord
from controlplane.scheduler.placement import FirstFitPlacer, Placed, Unplaceable

GiB = 1 << 30
SPEC = ModelSpec(name="m", source="builtin:smollm2-135m")


def node(name: str, free_gib: float, connected: bool = True, model_gib: float = 1.0) -> NodeRecord:
    return NodeRecord(
        node_id=name,
        connected=connected,
        ram_free_bytes=int(free_gib * GiB),
        cached_models={SPEC.source: int(model_gib * GiB)},
    )


def test_first_node_that_fits_wins() -> None:
    nodes = [node("c", 8), node("a", 0.5), node("b", 4)]
    assert FirstFitPlacer().place(SPEC, nodes, []) == Placed("b")


def test_reasons_for_every_rejected_node() -> None:
    nodes = [node("a", 0.5), node("b", 8, connected=False)]
    decision = FirstFitPlacer().place(SPEC, nodes, [])
    assert isinstance(decision, Unplaceable)
    assert decision.reasons["b"] == "not connected"
    assert decision.reasons["a"].startswith("needs 1280 MiB RAM, 512 MiB free")


def test_replicas_assigned_but_not_running_reserve_memory() -> None:
    only = node("a", 2.0)
    assigned = ReplicaRecord("m-1", "m", SPEC, node_id="a", phase=ReplicaPhase.ASSIGNED)
    assert isinstance(FirstFitPlacer().place(SPEC, [only], [assigned]), Unplaceable)
    running = ReplicaRecord("m-1", "m", SPEC, node_id="a", phase=ReplicaPhase.READY)
    assert FirstFitPlacer().place(SPEC, [only], [running]) == Placed("a")

"""Fit-aware placement: nodes in name order, first fit wins, GPU layers from the memory model, reasons."""

from __future__ import annotations

from controlplane.domain import CachedModelInfo, ModelSpec, NodeRecord, ReplicaPhase, ReplicaRecord
from controlplane.scheduler.placement import RUNTIME_OVERHEAD_BYTES, FitPlacer, Placed, Unplaceable
from llamafleet.fit.recommend import Gpu
from tests.support.profiles import GIB, llama_like

PROFILE = llama_like()  # ~7.3 GiB of weights, 32 layers, GQA
SPEC = ModelSpec(name="m", source="/models/llama.gguf", context_length=4096, parallel_slots=1)


def node(
    name: str, ram_gib: float, gpus: tuple[float, ...] = (), connected: bool = True, profile: bool = True
) -> NodeRecord:
    return NodeRecord(
        node_id=name,
        connected=connected,
        ram_free_bytes=int(ram_gib * GIB),
        gpus=tuple(Gpu(f"CUDA{i}", int(g * GIB), int(g * GIB)) for i, g in enumerate(gpus)),
        cached_models={SPEC.source: CachedModelInfo(PROFILE.file_size, PROFILE)} if profile else {},
        models_reported=True,
    )


def test_first_node_that_fits_wins_in_cpu_mode_without_gpus() -> None:
    nodes = [node("c", 32), node("a", 4), node("b", 16)]
    assert FitPlacer().place(SPEC, nodes, []) == Placed("b", 0)


def test_auto_takes_every_layer_a_big_gpu_holds_and_part_of_a_small_one() -> None:
    assert FitPlacer().place(SPEC, [node("a", 4, gpus=(24,))], []) == Placed("a", 33)
    partial = FitPlacer().place(SPEC, [node("a", 16, gpus=(4,))], [])
    assert isinstance(partial, Placed)
    assert 0 < partial.n_gpu_layers < 33
    # two GPUs together hold what neither holds alone
    split = FitPlacer().place(SPEC, [node("a", 4, gpus=(5, 5))], [])
    assert split == Placed("a", 33)


def test_a_fixed_layer_count_is_checked_as_given() -> None:
    fixed = SPEC.model_copy(update={"gpu_layers": 33})
    decision = FitPlacer().place(fixed, [node("a", 16, gpus=(4,))], [])
    assert isinstance(decision, Unplaceable)
    assert decision.reasons["a"].startswith("with 33 GPU layers CUDA0 needs")
    assert FitPlacer().place(fixed, [node("b", 16, gpus=(24,))], []) == Placed("b", 33)


def test_reasons_for_every_rejected_node_say_how_much_is_missing() -> None:
    nodes = [node("a", 2), node("b", 64, connected=False), node("c", 3, gpus=(1,))]
    decision = FitPlacer().place(SPEC, nodes, [])
    assert isinstance(decision, Unplaceable)
    assert decision.reasons["b"] == "not connected"
    assert decision.reasons["a"].startswith("cpu mode needs")
    assert "short" in decision.reasons["a"]
    assert "CUDA0 mode" in decision.reasons["c"]


def test_replicas_assigned_but_not_running_reserve_their_estimate() -> None:
    only = node("a", 12)
    assigned = ReplicaRecord("m-1", "m", SPEC, node_id="a", phase=ReplicaPhase.ASSIGNED, n_gpu_layers=0)
    assert isinstance(FitPlacer().place(SPEC, [only], [assigned]), Unplaceable)
    running = ReplicaRecord("m-1", "m", SPEC, node_id="a", phase=ReplicaPhase.READY, n_gpu_layers=0)
    assert FitPlacer().place(SPEC, [only], [running]) == Placed("a", 0)


def test_a_file_no_node_reported_waits_for_every_node_to_answer_then_gets_a_flat_allowance() -> None:
    silent = node("a", 64, profile=False)
    silent.models_reported = False  # asked (WatchModels) but not answered yet
    decision = FitPlacer().place(SPEC, [silent, node("b", 64, profile=False)], [])
    assert decision == Unplaceable({"a": "has not yet reported whether it holds the model file"})
    silent.models_reported = True  # nobody has it: assign, and the agent reports model_not_found
    small = node("c", (RUNTIME_OVERHEAD_BYTES - 1) / GIB, profile=False)
    assert FitPlacer().place(SPEC, [small, silent], []) == Placed("a", 0)


def test_an_unreadable_header_is_assigned_so_the_agent_reports_why() -> None:
    broken = node("a", 8, profile=False)
    broken.cached_models = {SPEC.source: CachedModelInfo(10 * GIB, None, "truncated")}
    assert FitPlacer().place(SPEC, [broken], []) == Unplaceable({"a": "needs 10496 MiB RAM, 8192 MiB free"})
    broken.ram_free_bytes = 16 * GIB
    assert FitPlacer().place(SPEC, [broken], []) == Placed("a", 0)

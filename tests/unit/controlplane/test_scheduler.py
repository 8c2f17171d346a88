"""The scheduler, table-driven over machine fixtures (fixtures/machines.json): plugins, reasons, split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from controlplane.domain import ModelSpec, NodeRecord, ReplicaPhase, ReplicaRecord
from controlplane.metrics import ControlPlaneMetrics
from controlplane.scheduler.fit import profile_for
from controlplane.scheduler.framework import WAITING, Scheduler, reservations
from controlplane.scheduler.placement import Placed, Unplaceable, host_bytes_needed
from controlplane.scheduler.profile import SchedulerProfile, load_profile
from llamafleet.core.errors import InvalidRequest
from llamafleet.fit.curves import OffloadCurves
from tests.support.machines import machine_types, node_from
from tests.support.profiles import llama_like

BIG = llama_like()  # 8B-shaped: ~7.3 GiB of weights, 32 layers
SMALL = llama_like(n_layer=16, layer_mib=50)  # ~1.9 GiB
SOURCES = {"big": "/models/big.gguf", "small": "/models/small.gguf"}
PROFILES = {"big": BIG, "small": SMALL}
MACHINES = machine_types()


@dataclass
class Case:
    name: str
    nodes: list[str]  # "node-name:machine-type"
    model: str = "small"
    spec: dict[str, Any] = field(default_factory=dict)
    holds: dict[str, list[str]] | None = None  # node → models it holds (default: all of them)
    running: list[str] = field(default_factory=list)  # nodes already running a replica of the model
    disconnected: list[str] = field(default_factory=list)
    expect_node: str | None = None
    expect_ngl: int | None = None
    expect_reasons: dict[str, str] = field(default_factory=dict)  # node → substring of its reason


CASES = [
    Case("spread picks the node with most room", ["a:cpu-8g", "b:cpu-64g", "c:cpu-128g"], expect_node="c"),
    Case(
        "binpack fills the fullest node that fits",
        ["a:cpu-8g", "b:cpu-64g", "c:cpu-128g"],
        spec={"placement": "binpack"},
        expect_node="a",
    ),
    Case(
        "node selector keeps only matching labels",
        ["a:cpu-128g", "g:gpu-24g"],
        spec={"node_selector": {"tier": "gpu"}},
        expect_node="g",
        expect_reasons={},
    ),
    Case(
        "a selector nothing matches says which labels",
        ["a:cpu-128g"],
        spec={"node_selector": {"tier": "gpu"}},
        expect_reasons={"a": "labels do not match nodeSelector (tier=gpu)"},
    ),
    Case(
        "auto offloads every layer a big GPU holds",
        ["g:gpu-24g"],
        model="big",
        expect_node="g",
        expect_ngl=33,
    ),
    Case("auto offloads part of the model to a small GPU", ["g:gpu-4g"], model="big", expect_node="g"),
    Case(
        "two small GPUs hold together what one cannot",
        ["g:gpu-2x8g"],
        model="big",
        expect_node="g",
        expect_ngl=33,
    ),
    Case(
        "a fixed layer count is checked as given",
        ["g:gpu-4g"],
        model="big",
        spec={"gpu_layers": 33},
        expect_reasons={"g": "with 33 GPU layers CUDA0 needs"},
    ),
    Case(
        "cache locality prefers the node holding the file",
        ["a:cpu-64g", "b:cpu-64g"],
        holds={"a": [], "b": ["small"]},
        expect_node="b",
    ),
    Case(
        "replicas of one model spread over nodes", ["a:cpu-64g", "b:cpu-64g"], running=["a"], expect_node="b"
    ),
    Case(
        "disconnected nodes are skipped",
        ["a:cpu-128g", "b:cpu-8g"],
        disconnected=["a"],
        expect_node="b",
        expect_reasons={"a": "not connected"},
    ),
    Case(
        "more threads than any node has are refused with the reason",
        ["a:cpu-8g", "g:gpu-24g"],
        spec={"threads": 12},
        expect_reasons={"a": "threads 12 is more than its 4 usable CPUs", "g": "more than its 8 usable"},
    ),
    Case(
        "full nodes say their CPUs are taken and how to share them",
        ["a:cpu-8g"],
        spec={"threads": 2},
        running=["a", "a"],
        expect_reasons={"a": "its CPUs are taken: replicas there hold 4 of 4"},
    ),
    Case(
        "shareCpus places on a node whose CPUs are held",
        ["a:cpu-8g"],
        spec={"threads": 2, "share_cpus": True},
        running=["a", "a"],
        expect_node="a",
    ),
    Case(
        "fits nowhere: each node says how much it is short",
        ["a:cpu-8g", "g:gpu-4g"],
        model="big",
        spec={"context_length": 32768, "parallel_slots": 4},
        expect_reasons={"a": "cpu mode needs", "g": "short"},
    ),
]


def build(case: Case) -> tuple[ModelSpec, list[NodeRecord], list[ReplicaRecord]]:
    fields = {"context_length": 4096, "parallel_slots": 1} | case.spec
    spec = ModelSpec(name=case.model, source=SOURCES[case.model], **fields)
    nodes = []
    for entry in case.nodes:
        name, kind = entry.split(":")
        held = case.holds.get(name, []) if case.holds is not None else list(SOURCES)
        models = {SOURCES[m]: PROFILES[m] for m in held}
        nodes.append(node_from(name, MACHINES[kind], models, connected=name not in case.disconnected))
    running = [
        ReplicaRecord(
            f"{case.model}-{i}", case.model, spec, node_id=n, phase=ReplicaPhase.READY, n_gpu_layers=0
        )
        for i, n in enumerate(case.running)
    ]
    return spec, nodes, running


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_scheduler_table(case: Case) -> None:
    spec, nodes, replicas = build(case)
    decision = Scheduler().place(spec, nodes, replicas)
    if case.expect_node is None:
        assert isinstance(decision, Unplaceable), decision
        for node, text in case.expect_reasons.items():
            assert text in decision.reasons[node], decision.reasons
        return
    assert isinstance(decision, Placed), decision
    assert decision.node_id == case.expect_node
    if case.expect_ngl is not None:
        assert decision.n_gpu_layers == case.expect_ngl
    if case.name.startswith("auto offloads part"):
        assert 0 < decision.n_gpu_layers < 33


def test_replicas_placed_but_not_running_hold_their_memory_and_share_one_copy_of_the_weights() -> None:
    spec, (node,), _ = build(Case("", ["a:cpu-8g"], model="small"))
    profile = profile_for(spec.source, [node])[0]
    assert profile is not None
    need = host_bytes_needed(spec, node, profile, 0)
    private = need - profile.weight_bytes  # what each more replica of the same file adds
    node.ram_free_bytes = need + private + private // 2  # room for two sharing the weights, not three
    assigned = ReplicaRecord(
        "small-1", "small", spec, node_id="a", phase=ReplicaPhase.ASSIGNED, n_gpu_layers=0
    )
    second = ReplicaRecord("small-2", "small", spec, node_id="a", phase=ReplicaPhase.ASSIGNED, n_gpu_layers=0)
    placed = Scheduler().place(spec, [node], [assigned])
    assert isinstance(placed, Placed)
    assert placed.host_bytes == private  # the weights are mapped once on the node
    assert isinstance(Scheduler().place(spec, [node], [assigned, second]), Unplaceable)  # not for three
    node.ram_free_bytes = 2 * need + private // 2  # room for two full copies would fit a second …
    assert reservations([assigned, second], [node]) == {"a": need + private}  # … but they share one


def test_a_file_no_node_reported_waits_for_every_node_then_gets_a_flat_allowance() -> None:
    spec, nodes, _ = build(Case("", ["a:cpu-64g", "b:cpu-64g"], holds={"a": [], "b": []}))
    nodes[0].models_reported = False  # asked (WatchModels), not answered yet
    assert Scheduler().place(spec, nodes, []) == Unplaceable({"a": WAITING})
    nodes[0].models_reported = True  # nobody has it: assign, the agent reports model_not_found
    assert isinstance(Scheduler().place(spec, nodes, []), Placed)


def test_a_split_plan_when_no_single_node_fits_and_the_model_allows_it() -> None:
    spec, nodes, _ = build(
        Case("", ["a:cpu-8g", "b:cpu-8g", "c:cpu-8g"], model="big", spec={"allow_split": True})
    )
    nodes[1].ram_free_bytes = 6 << 30  # the head is the node with most free memory
    decision = Scheduler().place(spec, nodes, [])
    assert isinstance(decision, Unplaceable)
    plan = decision.split_plan
    assert plan is not None
    assert plan.head == "a"
    assert [p.node_id for p in plan.parts] == ["c", "b", "a"]  # workers by free memory, the head last
    assert plan.parts[-1].node_id == plan.head  # next to the output layer, on the head's CPU
    assert plan.parts[0].first_layer == 0
    assert plan.parts[-1].last_layer == BIG.n_layer - 1
    for before, after in zip(plan.parts, plan.parts[1:], strict=False):
        assert after.first_layer == before.last_layer + 1  # contiguous ranges
    assert all(p.bytes <= p.free_bytes for p in plan.parts)
    assert "head a" in plan.describe()
    no_split = ModelSpec(**(spec.model_dump() | {"allow_split": False}))
    assert Scheduler().place(no_split, nodes, []).split_plan is None  # type: ignore[union-attr]


def test_no_split_plan_when_even_all_nodes_together_are_too_small() -> None:
    spec, nodes, _ = build(Case("", ["a:cpu-8g", "b:cpu-8g"], model="big", spec={"allow_split": True}))
    for node in nodes:
        node.ram_free_bytes = 3 << 30
    decision = Scheduler().place(spec, nodes, [])
    assert isinstance(decision, Unplaceable)
    assert decision.split_plan is None


def test_a_profile_changes_the_choice_and_every_decision_is_counted() -> None:
    spec, nodes, _ = build(Case("", ["a:cpu-8g", "b:cpu-64g", "c:cpu-128g"]))
    registry = CollectorRegistry()
    binpack = SchedulerProfile.model_validate({"scorers": [{"name": "binpack"}]})
    decision = Scheduler(binpack, ControlPlaneMetrics(registry)).place(spec, nodes, [])
    assert isinstance(decision, Placed)
    assert decision.node_id == "a"
    assert (
        registry.get_sample_value(
            "llamafleet_scheduler_decisions_total", {"model": "small", "result": "placed"}
        )
        == 1
    )
    nodes[0].connected = False
    Scheduler(binpack, ControlPlaneMetrics(registry := CollectorRegistry())).place(spec, nodes[:1], [])
    assert registry.get_sample_value("llamafleet_scheduler_rejections_total", {"filter": "node-ready"}) == 1


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("filters: [node-ready, gpu-magic]\n", "unknown filter 'gpu-magic'"),
        ("filters: [fits-memory]\n", "node-ready must stay"),
        ("scorers: [{name: spread}, {name: spread}]\n", "listed twice"),
        ("scorers: [{name: spread, weight: 0}]\n", "greater than 0"),
        ("scorers: [{name: cheapest}]\n", "scorers: model-strategy, binpack"),
        ("filters: [node-ready\n", "scheduler profile"),
    ],
)
def test_bad_profiles_are_refused_at_start_with_what_is_wrong(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    with pytest.raises(InvalidRequest, match=None) as caught:
        load_profile(path)
    assert says in caught.value.message


def test_the_default_profile_loads_without_a_file() -> None:
    assert load_profile(None) == SchedulerProfile()


@pytest.mark.parametrize("gpus", [1, 2])
def test_most_gpu_layers_that_fit_is_the_largest_fitting_count_even_where_curves_dip(gpus: int) -> None:
    # Compute buffers can make a device need less at a larger g, so "the most layers that fit" is
    # not a monotone search; the one-GPU shortcut (sorted needs) must agree with checking every g.
    rng = np.random.default_rng(5)
    for _ in range(300):
        top = int(rng.integers(1, 90))
        device = np.sort(rng.integers(0, 1000, (top, gpus)), axis=0) + rng.integers(-40, 40, (top, gpus))
        free = rng.integers(-10, 1100, (40, gpus)).astype(float)
        every_g = np.all(device[None, :, :] <= free[:, None, :], axis=2)
        expected = [max((g + 1 for g in np.flatnonzero(row)), default=0) for row in every_g]
        curves = OffloadCurves(np.zeros(top + 1), np.vstack([np.zeros((1, gpus)), device]).astype(float))
        assert curves.most_layers(free).tolist() == expected


def test_replicas_leaving_threads_to_the_node_hold_one_cpu_each_within_a_pass_and_after() -> None:
    """Two replicas on a 2-CPU node (1 thread each, the agent's share); a third waits for another node."""
    spec, (node,), _ = build(Case("", ["a:cpu-64g"], spec={"replicas": 3}))
    node.cpu_usable = 2
    first, second, third = Scheduler().place_many([spec, spec, spec], [node], [])
    assert isinstance(first, Placed)
    assert isinstance(second, Placed)
    assert isinstance(third, Unplaceable)
    assert "its CPUs are taken: replicas there hold 2 of 2" in third.reasons["a"]
    placed = [ReplicaRecord(f"small-{i}", "small", spec, node_id="a", phase=phase, n_gpu_layers=0)
              for i, phase in enumerate((ReplicaPhase.READY, ReplicaPhase.STARTING))]  # fmt: skip
    assert isinstance(Scheduler().place(spec, [node], placed), Unplaceable)
    placed[1].phase = ReplicaPhase.FAILED  # failed for good: no process, no CPUs held
    assert isinstance(Scheduler().place(spec, [node], placed), Placed)
    node.cpu_usable = 0  # an agent that reports no CPU count: not counted
    assert isinstance(Scheduler().place(spec, [node], [*placed, *placed]), Placed)


def test_the_prompt_cache_counts_in_a_replicas_host_memory_and_a_node_short_of_it_says_so() -> None:
    """An engine's saved prompt states (a Model's cacheRam, 1 GiB by default) fill to their cap under
    load: placement counts the cap, so a node with room for the model alone is refused with the reason,
    and a smaller cacheRam (0: none) places there."""
    spec, (node,), _ = build(Case("", ["a:cpu-64g"], model="small"))
    off = spec.model_copy(update={"cache_ram": 0})
    profile = profile_for(spec.source, [node])[0]
    assert spec.cache_ram == 1024
    assert host_bytes_needed(spec, node, profile, 0) - host_bytes_needed(off, node, profile, 0) == 1 << 30
    node.ram_free_bytes = host_bytes_needed(off, node, profile, 0) + (512 << 20)
    refused = Scheduler().place(spec, [node], [])
    assert isinstance(refused, Unplaceable), refused
    assert "1.00 GiB of it the prompt cache (cacheRam)" in refused.reasons["a"], refused.reasons
    assert isinstance(Scheduler().place(off, [node], []), Placed)
    half = spec.model_copy(update={"cache_ram": 256})
    placed = Scheduler().place(half, [node], [])
    assert isinstance(placed, Placed)
    assert placed.host_bytes == host_bytes_needed(off, node, profile, 0) + (256 << 20)


def test_a_splits_head_holds_the_prompt_cache_beside_its_layers() -> None:
    """Saved states hold every layer's cells, the workers' too, in the head engine's host memory."""
    from controlplane.scheduler.fit import context_params
    from controlplane.scheduler.split import plan_split
    from llamafleet.fit.recommend import NodeResources

    spec, nodes, _ = build(
        Case("", ["a:cpu-8g", "b:cpu-8g", "c:cpu-8g"], model="big", spec={"allow_split": True})
    )
    offers = [NodeResources(n.node_id, 6 << 30, (), ()) for n in nodes]
    with_cache = plan_split(BIG, context_params(spec), offers)
    without = plan_split(BIG, context_params(spec.model_copy(update={"cache_ram": 0})), offers)
    assert with_cache is not None
    assert without is not None
    head, head_before = with_cache.parts[-1], without.parts[-1]
    assert head.node_id == head_before.node_id
    # the head keeps fewer layers so that its cache fits beside them
    assert head.first_layer > head_before.first_layer
    assert head.bytes <= head.free_bytes


def test_a_starting_replica_holds_its_memory_until_ready_as_an_assigned_one_does() -> None:
    """Starting covers a download that can take minutes, in which the node's free memory does not show
    the model: until it is ready its need is held, the weights once per file and node."""
    spec, (node,), _ = build(Case("", ["a:cpu-64g"], model="small"))
    profile = profile_for(spec.source, [node])[0]
    assert profile is not None
    need = host_bytes_needed(spec, node, profile, 0)
    private = need - profile.weight_bytes

    def replica(i: int, phase: ReplicaPhase) -> ReplicaRecord:
        return ReplicaRecord(f"small-{i}", "small", spec, node_id="a", phase=phase, n_gpu_layers=0)

    assert reservations([replica(1, ReplicaPhase.STARTING)], [node]) == {"a": need}
    starting_two = [replica(1, ReplicaPhase.STARTING), replica(2, ReplicaPhase.ASSIGNED)]
    assert reservations(starting_two, [node]) == {"a": need + private}  # one copy of the weights
    beside_ready = [replica(1, ReplicaPhase.READY), replica(2, ReplicaPhase.STARTING)]
    assert reservations(beside_ready, [node]) == {"a": private}  # the ready one's weights are mapped
    assert reservations([replica(1, ReplicaPhase.READY)], [node]) == {}
    node.ram_free_bytes = need + private // 2  # room for the starting one's need, not a second's
    assert isinstance(Scheduler().place(spec, [node], [replica(1, ReplicaPhase.STARTING)]), Unplaceable)

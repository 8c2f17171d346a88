"""The autoscaler's loop over real cluster state: gateways' reports in, counts out; the count a
new leader finds in a Model's status (controlplane/autoscaler/loop.py, operator/status.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from controlplane.autoscaler.loop import Autoscaler
from controlplane.domain import ModelSpec, ScaleStatus
from controlplane.metrics import ControlPlaneMetrics
from controlplane.operator.status import Admission, build_status, restored_scaling
from controlplane.state.cluster import ClusterState
from controlplane.state.demand import ModelLoad
from controlplane.state.views import model_conditions


def spec(replicas: int = 1, **autoscaling: object) -> ModelSpec:
    return ModelSpec.model_validate({
        "name": "m", "source": "builtin:smollm2-135m", "replicas": replicas, "parallelSlots": 4,
        "autoscaling": {"maxReplicas": 5, "stableWindow": "10s", "panicWindow": "2s", **autoscaling},
    })  # fmt: skip


def test_target_replicas_follows_the_owner_of_the_count() -> None:
    state = ClusterState()
    plain = ModelSpec(name="m", source="builtin:smollm2-135m", replicas=3)
    assert state.target_replicas(plain) == 3
    assert state.target_replicas(spec(replicas=9)) == 5  # the starting count, within the bounds
    state.set_scale("m", ScaleStatus(2, "decided"))
    assert state.target_replicas(spec(replicas=9)) == 2
    assert state.target_replicas(spec(replicas=4, mode="External")) == 4  # the HPA's spec.replicas


def test_reports_from_gateways_are_summed_and_drive_the_count() -> None:
    state = ClusterState()
    state.set_models([spec()])
    scaler = Autoscaler(state, ControlPlaneMetrics(CollectorRegistry()))
    scaler.tick(now=100.0, wall=1000.0)
    assert state.scaling["m"].reason.startswith("no gateway reports demand")  # no signal: hold
    assert state.scaling["m"].replicas == 1
    state.demand.report("gw-a", {"m": ModelLoad(4, 3, 999.0)}, now=101.0)
    state.demand.report("gw-b", {"m": ModelLoad(4, 5, 999.5)}, now=101.0)
    version = state.version
    scaler.tick(now=101.0, wall=1001.0)  # 16 requests, 3.2 per replica: a burst → 5 (the max)
    decided = state.scaling["m"]
    assert (decided.replicas, decided.panic, decided.demand) == (5, True, 16)
    assert decided.changed_unix == 1001.0
    assert state.version > version, "a new count wakes the reconciler and the gateways"
    state.demand.report("gw-a", {"m": ModelLoad(4, 3, 999.0)}, now=110.0)  # gw-b went silent
    assert state.demand.load("m", now=110.0) == ModelLoad(4, 3, 999.0)


def test_external_mode_never_sets_a_count_of_its_own() -> None:
    state = ClusterState()
    state.set_models([spec(replicas=2, mode="External")])
    state.demand.report("gw", {"m": ModelLoad(40, 40, 1.0)}, now=5.0)
    Autoscaler(state, ControlPlaneMetrics(CollectorRegistry())).tick(now=5.0, wall=5.0)
    assert state.scaling["m"].replicas == 2
    assert "External" in state.scaling["m"].reason
    assert state.target_replicas(state.models["m"]) == 2


def test_a_new_leader_carries_on_from_the_status_the_last_one_wrote() -> None:
    obj = {"metadata": {"name": "m", "generation": 1}, "spec": {}}
    decided = ScaleStatus(4, "panic: 14.0 requests over 2s for 1 replica(s)", changed_unix=1_790_000_000.0)
    core = model_conditions(spec(), (), {})
    status = build_status(obj, Admission("m", spec()), core, (), None, "2026-11-28T00:00:00Z", decided)
    assert status["autoscaling"]["desiredReplicas"] == 4
    restored = restored_scaling({**obj, "status": status})
    assert restored is not None
    assert (restored.replicas, restored.changed_unix) == (4, 1_790_000_000.0)
    assert "carried on from the last leader" in restored.reason
    assert restored_scaling(obj) is None

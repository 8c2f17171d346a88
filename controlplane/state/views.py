"""What readers see of the cluster state: each node's assignments, the routing table, the Models'
status views and conditions. Pure projections of ClusterState (controlplane/state/cluster.py), which
alone writes the state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from controlplane.domain import (
    Condition,
    Endpoint,
    ModelRoute,
    ModelSpec,
    ModelStatusView,
    ReplicaPhase,
    ReplicaRecord,
    RoutingTable,
    needs_new_replicas,
)
from controlplane.state.cluster import COLD_START_MARGIN, ClusterState, remote_parts_of
from llamafleet.contract.replica import AdapterSpec, ReplicaSpec, Role, RpcLease


def prefetch_for(state: ClusterState, node_id: str) -> dict[str, str]:
    """Sources of models with ``prefetch`` this node may host (its labels match their nodeSelector),
    each with the sha256 its Model declares ("" when none)."""
    node = state.nodes.get(node_id)
    labels = node.labels if node is not None else {}
    wanted: dict[str, str] = {}
    for spec in sorted(state.models.values(), key=lambda s: s.name):
        if spec.prefetch and all(labels.get(k) == v for k, v in spec.node_selector.items()):
            wanted[spec.source] = wanted.get(spec.source) or spec.sha256
    return dict(sorted(wanted.items()))


def assignments_for(state: ClusterState, node_id: str) -> tuple[int, dict[str, ReplicaSpec]]:
    """What ``node_id`` should run: engines (a split's head once all its workers are ready) and the
    RPC workers it hosts for other nodes' heads."""
    node = state.nodes.get(node_id)
    generation = node.desired_generation if node else 0
    desired: dict[str, ReplicaSpec] = {}
    for r in state.replicas.values():
        engine = _assignment(r)
        if r.node_id == node_id and all(p.phase == ReplicaPhase.READY and p.endpoint for p in r.parts):
            desired[r.replica_id] = replace(engine, remote_parts=remote_parts_of(r))
        head = state.nodes.get(r.node_id or "")
        if head is None:
            continue
        for part in (p for p in r.parts if p.node_id == node_id):
            lease = RpcLease(head.node_id, head.advertise_host, r.replica_id, part.first_layer,
                                part.last_layer)  # fmt: skip
            desired[part.worker_id] = replace(
                engine, replica_id=part.worker_id, role=Role.RPC_WORKER, lease=lease, adapters=(),
                n_gpu_layers=-1 if part.gpu else 0,  # the worker serves its GPU, or its CPU
            )  # fmt: skip
    return generation, desired


def routing_table(state: ClusterState) -> RoutingTable:
    routes = {}
    for name, spec in state.models.items():
        endpoints = tuple(
            Endpoint(
                r.replica_id,
                r.node_id or "",
                r.endpoint,
                r.phase == ReplicaPhase.READY,
                r.adapters,
                r.engine_secret,
            )
            for r in state.replicas.values()
            if r.model == name and r.node_id and r.endpoint
        )
        routes[name] = ModelRoute(
            name,
            spec.parallel_slots,
            spec.context_length,
            endpoints,
            state.created.get(name, 0),
            balancer=spec.balancer or "",
            **_route_fields(state, spec),
        )
    return RoutingTable(state.version, routes, settling=not state.settled)


def _route_fields(state: ClusterState, spec: ModelSpec) -> dict[str, Any]:
    """The ModelRoute fields for capacity on its way: the target count, the spec's adapters, and
    what gateways do when no replica is ready — an autoscaled model holds the request while
    replicas start (from zero too); any other answers 503 at once."""
    auto = spec.autoscaling
    adapters = tuple(a.name for a in spec.adapters)
    if auto is None:
        return {"target_replicas": spec.replicas, "adapters": adapters}
    measured = state.cold_starts.get(spec.name, 0.0)  # never shorter than the cold start we have seen
    hold_s = max(auto.cold_start_s, COLD_START_MARGIN * measured)
    return {
        "target_replicas": state.target_replicas(spec),
        "holds": True,
        "hold_s": hold_s,
        "adapters": adapters,
    }


def model_views(state: ClusterState) -> list[ModelStatusView]:
    return [_model_view(state, spec) for spec in state.models.values()]


def _model_view(state: ClusterState, spec: ModelSpec) -> ModelStatusView:
    replicas = tuple(r for r in state.replicas.values() if r.model == spec.name)
    ready = sum(1 for r in replicas if r.phase == ReplicaPhase.READY)
    target = state.target_replicas(spec)
    return ModelStatusView(
        spec.name,
        spec.source,
        target,
        ready,
        model_conditions(spec, replicas, state.pending_reasons, state.split_plans.get(spec.name, ""), target),
        replicas,
        scaling=state.scaling.get(spec.name) if spec.autoscaling else None,
    )


def _assignment(r: ReplicaRecord) -> ReplicaSpec:
    return ReplicaSpec(
        replica_id=r.replica_id,
        model=r.model,
        source=r.spec.source,
        sha256=r.spec.sha256,
        context_length=r.spec.context_length,
        parallel_slots=r.spec.parallel_slots,
        n_gpu_layers=r.n_gpu_layers,
        n_threads=r.spec.threads,
        embeddings=r.spec.embeddings,
        adapters=tuple(AdapterSpec(a.name, a.path, a.scale) for a in r.spec.adapters),
        request_defaults=r.spec.request_defaults.as_json(),
        chat_template=r.spec.chat_template,
        pooling=r.spec.pooling,
        speculative=r.spec.speculative,
        draft_source=r.spec.draft_model.source if r.spec.draft_model else "",
        draft_sha256=r.spec.draft_model.sha256 if r.spec.draft_model else "",
        cache_ram=r.spec.cache_ram,
    )


# A replica's error about its model's file → the ModelValid condition's reason.
_SOURCE_ERRORS = {
    "model_invalid": "ModelInvalid",
    "model_not_found": "ModelNotFound",
    "source_denied": "SourceDenied",
    "checksum_mismatch": "ChecksumMismatch",
    "disk_full": "DiskFull",
}


def model_conditions(
    spec: ModelSpec,
    replicas: tuple[ReplicaRecord, ...],
    pending_reasons: Mapping[str, Mapping[str, str]],
    split_plan: str = "",
    target: int | None = None,
) -> tuple[Condition, ...]:
    """Kubernetes-style conditions: Placed, ModelValid, Ready — each with a reason people can act on.
    ``target``: the replica count wanted now (the autoscaler's), else the spec's."""
    desired = spec.replicas if target is None else target
    unplaced = [r for r in replicas if r.node_id is None]
    if unplaced:
        reasons = pending_reasons.get(spec.name, {})
        detail = "; ".join(f"{node}: {why}" for node, why in sorted(reasons.items())) or "no node connected"
        message = f"{len(unplaced)} replica(s) pending: {detail}" + (f"; {split_plan}" if split_plan else "")
        placed = Condition("Placed", "False", "SplitPlanned" if split_plan else "NoCapacity", message)
    else:
        placed = Condition("Placed", "True", "Placed", f"{len(replicas)} replica(s) placed")
    invalid = [r for r in replicas if r.error in _SOURCE_ERRORS]
    if invalid:
        valid = Condition("ModelValid", "False", _SOURCE_ERRORS[invalid[0].error], invalid[0].message)
    elif any(r.phase in (ReplicaPhase.READY, ReplicaPhase.STARTING) for r in replicas):
        valid = Condition("ModelValid", "True", "Loaded")
    else:
        valid = Condition("ModelValid", "Unknown", "NotLoadedYet")
    ready_count = sum(1 for r in replicas if r.phase == ReplicaPhase.READY)
    if desired and ready_count >= desired:
        ready = Condition("Ready", "True", "AllReplicasReady", f"{ready_count}/{desired} ready")
    elif desired == 0 and spec.autoscaling is not None:
        ready = Condition("Ready", "True", "ScaledToZero", "no replica while idle; a request starts one")
    else:
        failing = next(
            (r for r in replicas if r.phase in (ReplicaPhase.FAILED, ReplicaPhase.RESTARTING)), None
        )
        reason = "ReplicaFailed" if failing and failing.phase == ReplicaPhase.FAILED else "Progressing"
        message = f"{ready_count}/{desired} ready" + (f"; {failing.message}" if failing else "")
        ready = Condition("Ready", "False", reason if failing else "Progressing", message)
    outdated = sum(1 for r in replicas if needs_new_replicas(r.spec, spec))
    if outdated:
        message = (f"rolling update: {len(replicas) - outdated} replica(s) with the current spec, {outdated} "
                   "old one(s) drained and stopped as new ones become ready")  # fmt: skip
        updated = Condition("Updated", "False", "RollingUpdate", message)
    else:
        updated = Condition("Updated", "True", "UpToDate", "every replica runs the current spec")
    return placed, valid, ready, updated

"""The one place where ClusterService protobuf messages are converted to and from domain types."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from controlplane.domain import (
    Condition,
    Endpoint,
    ModelRoute,
    ModelSpec,
    ModelStatusView,
    NodeRecord,
    ReplicaPhase,
    ReplicaRecord,
    RoutingTable,
    ScaleStatus,
    WorkerPart,
)
from llamafleet.fit.estimate import Estimate
from llamafleet.fit.recommend import Mode, Recommendation
from protos.gen.llamafleet.cluster.v1 import cluster_pb2 as pb


def _mode_to_pb(m: Mode) -> pb.FitMode:
    return pb.FitMode(**asdict(m))  # the message mirrors the dataclass (same names)


def _mode_from_pb(m: pb.FitMode) -> Mode:
    values = {f.name: getattr(m, f.name) for f in fields(Mode)}
    return Mode(**(values | {"devices": tuple(m.devices)}))


def recommendation_to_pb(rec: Recommendation | None, error: str = "") -> pb.Recommendation | None:
    if rec is None:
        return pb.Recommendation(error=error) if error else None
    return pb.Recommendation(
        node=rec.node,
        cpu_mode=_mode_to_pb(rec.cpu_mode),
        gpu_mode=[_mode_to_pb(m) for m in rec.gpu_mode],
        fits=rec.fits,
        reason="" if rec.fits else rec.reason(),
        run_mode=rec.best.name if rec.best else "",
        run_ngl=rec.best.recommend_ngl if rec.best else 0,
        error=error,
    )


def recommendation_from_pb(message: pb.Recommendation) -> tuple[Recommendation | None, str]:
    if not message.HasField("cpu_mode"):
        return None, message.error
    cpu = _mode_from_pb(message.cpu_mode)
    gpus = tuple(_mode_from_pb(m) for m in message.gpu_mode)
    best = next((m for m in (cpu, *gpus) if message.fits and m.name == message.run_mode), None)
    return Recommendation(message.node, cpu, gpus, best), message.error


def estimate_to_pb(rec: Recommendation, est: Estimate) -> pb.NodeFit:
    return pb.NodeFit(
        recommendation=recommendation_to_pb(rec),
        devices=[pb.DeviceFit(**d.to_dict()) for d in est.devices],  # the message mirrors the dict
        ram_bytes=est.ram_bytes,
        vram_bytes=est.vram_bytes,
        page_cache_bytes=est.page_cache_bytes,
    )


def routing_table_to_pb(table: RoutingTable) -> pb.RoutingTable:
    return pb.RoutingTable(
        version=table.version,
        settling=table.settling,
        models=[
            pb.ModelRoute(
                model=route.model,
                parallel_slots=route.parallel_slots,
                context_length=route.context_length,
                created_unix=route.created,
                recommendation=recommendation_to_pb(route.recommendation, route.fit_error),
                balancer=route.balancer,
                target_replicas=route.target_replicas,
                holds=route.holds,
                hold_seconds=route.hold_s,
                adapters=route.adapters,
                endpoints=[
                    pb.Endpoint(
                        replica_id=e.replica_id,
                        node_id=e.node_id,
                        url=e.url,
                        ready=e.ready,
                        adapters=e.adapters,
                        secret=e.secret,
                    )
                    for e in route.endpoints
                ],
            )
            for route in table.models.values()
        ],
    )


def routing_table_from_pb(message: pb.RoutingTable) -> RoutingTable:
    models = {}
    for m in message.models:
        rec, error = recommendation_from_pb(m.recommendation)
        models[m.model] = ModelRoute(
            model=m.model,
            parallel_slots=m.parallel_slots,
            context_length=m.context_length,
            created=m.created_unix,
            endpoints=tuple(
                Endpoint(e.replica_id, e.node_id, e.url, e.ready, tuple(e.adapters), e.secret)
                for e in m.endpoints
            ),
            recommendation=rec,
            fit_error=error,
            balancer=m.balancer,
            target_replicas=m.target_replicas,
            holds=m.holds,
            hold_s=m.hold_seconds,
            adapters=tuple(m.adapters),
        )
    return RoutingTable(version=message.version, models=models, settling=message.settling)


def node_to_pb(node: NodeRecord, replicas: int) -> pb.Node:
    return pb.Node(
        node_id=node.node_id,
        hostname=node.hostname,
        connected=node.connected,
        cpu_model=node.cpu_model,
        cpu_logical_cores=node.cpu_logical_cores,
        ram_total_bytes=node.ram_total_bytes,
        ram_free_bytes=node.ram_free_bytes,
        devices=node.devices,
        desired_generation=node.desired_generation,
        applied_generation=node.applied_generation,
        replicas=replicas,
        agent_version=node.agent_version,
        last_seen_unix=int(node.last_seen),
        cpu_flags=list(node.cpu_flags),
        nvml=node.nvml,
        cordoned=node.cordoned,
        cpu_usable=node.cpu_usable,
        cpu_summary=node.cpu_summary,
        threads=node.threads,
        labels=node.labels,
        advertise_host=node.advertise_host,
        unschedulable=node.unschedulable,
        draining=node.draining,
        deleted=node.deleted,
    )


def node_from_pb(message: pb.Node) -> NodeRecord:
    return NodeRecord(
        node_id=message.node_id,
        hostname=message.hostname,
        connected=message.connected,
        cpu_model=message.cpu_model,
        cpu_logical_cores=message.cpu_logical_cores,
        ram_total_bytes=message.ram_total_bytes,
        ram_free_bytes=message.ram_free_bytes,
        devices=list(message.devices),
        desired_generation=message.desired_generation,
        applied_generation=message.applied_generation,
        agent_version=message.agent_version,
        last_seen=float(message.last_seen_unix),
        cpu_flags=tuple(message.cpu_flags),
        nvml=message.nvml,
        cordoned=message.cordoned,
        cpu_usable=message.cpu_usable,
        cpu_summary=message.cpu_summary,
        threads=message.threads,
        labels=dict(message.labels),
        advertise_host=message.advertise_host,
        unschedulable=message.unschedulable,
        draining=message.draining,
        deleted=message.deleted,
    )


def model_to_pb(view: ModelStatusView) -> pb.ModelStatus:
    return pb.ModelStatus(
        name=view.name,
        source=view.source,
        desired_replicas=view.desired_replicas,
        ready_replicas=view.ready_replicas,
        recommendation=recommendation_to_pb(view.recommendation, view.fit_error),
        scaling=pb.Scaling(**asdict(view.scaling)) if view.scaling else None,
        conditions=[
            pb.Condition(type=c.type, status=c.status, reason=c.reason, message=c.message)
            for c in view.conditions
        ],
        replicas=[
            pb.ReplicaView(
                replica_id=r.replica_id,
                node_id=r.node_id or "",
                phase=r.phase.value,
                endpoint=r.endpoint,
                restarts=r.restarts,
                message=r.message,
                parts=[pb.WorkerPartView(**(asdict(p) | {"phase": p.phase.value})) for p in r.parts],
                head_first_layer=r.head_layers[0] if r.head_layers else 0,
                head_last_layer=r.head_layers[1] if r.head_layers else 0,
                last_failure=r.last_failure,
                predicted_host_bytes=r.reserved_host_bytes,
                replacements=r.replacements,
                download_done_bytes=r.download[0],
                download_total_bytes=r.download[1],
                download_bytes_per_second=r.download[2],
                threads=r.threads,
            )
            for r in view.replicas
        ],
    )


def model_from_pb(message: pb.ModelStatus) -> ModelStatusView:
    spec = ModelSpec(name=message.name, source=message.source or "unknown", replicas=message.desired_replicas)
    rec, error = recommendation_from_pb(message.recommendation)
    scaling = message.scaling if message.HasField("scaling") else None
    return ModelStatusView(
        recommendation=rec,
        fit_error=error,
        scaling=ScaleStatus(
            scaling.replicas,
            scaling.reason,
            scaling.panic,
            scaling.demand,
            scaling.changed_unix,
            scaling.last_request_unix,
        )
        if scaling
        else None,
        name=message.name,
        source=message.source,
        desired_replicas=message.desired_replicas,
        ready_replicas=message.ready_replicas,
        conditions=tuple(
            Condition(c.type, c.status, c.reason, c.message)  # type: ignore[arg-type]
            for c in message.conditions
        ),
        replicas=tuple(
            ReplicaRecord(
                replica_id=r.replica_id,
                model=message.name,
                spec=spec,
                node_id=r.node_id or None,
                phase=ReplicaPhase(r.phase),
                endpoint=r.endpoint,
                restarts=r.restarts,
                message=r.message,
                parts=[
                    WorkerPart(
                        p.worker_id,
                        p.node_id,
                        p.first_layer,
                        p.last_layer,
                        p.reserved_bytes,
                        ReplicaPhase(p.phase),
                        p.endpoint,
                        p.message,
                        p.gpu,
                    )
                    for p in r.parts
                ],
                head_layers=(r.head_first_layer, r.head_last_layer) if r.parts else None,
                last_failure=r.last_failure,
                reserved_host_bytes=r.predicted_host_bytes,
                replacements=r.replacements,
                download=(r.download_done_bytes, r.download_total_bytes, r.download_bytes_per_second),
                threads=r.threads,
            )
            for r in message.replicas
        ),
    )


def node_fit_to_dict(message: pb.NodeFit) -> dict[str, Any]:
    """One node's answer to EvaluateFit, in the JSON shape of ``llamafleet fit --json``."""
    rec, _ = recommendation_from_pb(message.recommendation)
    return {
        "node": message.recommendation.node,
        "recommendation": rec.to_dict() if rec else None,
        "devices": [
            {
                "name": d.name,
                "kind": d.kind,
                "layers": d.layers,
                "weights_bytes": d.weights_bytes,
                "kv_bytes": d.kv_bytes,
                "compute_bytes": d.compute_bytes,
                "output_bytes": d.output_bytes,
                "overhead_bytes": d.overhead_bytes,
                "total_bytes": d.total_bytes,
            }
            for d in message.devices
        ],
        "ram_bytes": message.ram_bytes,
        "vram_bytes": message.vram_bytes,
        "page_cache_bytes": message.page_cache_bytes,
    }

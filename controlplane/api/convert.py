"""The one place where ClusterService protobuf messages are converted to and from domain types."""

from __future__ import annotations

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
)
from protos.gen.llamafleet.cluster.v1 import cluster_pb2 as pb


def routing_table_to_pb(table: RoutingTable) -> pb.RoutingTable:
    return pb.RoutingTable(
        version=table.version,
        models=[
            pb.ModelRoute(
                model=route.model,
                parallel_slots=route.parallel_slots,
                context_length=route.context_length,
                created_unix=route.created,
                endpoints=[
                    pb.Endpoint(
                        replica_id=e.replica_id,
                        node_id=e.node_id,
                        url=e.url,
                        ready=e.ready,
                        adapters=e.adapters,
                    )
                    for e in route.endpoints
                ],
            )
            for route in table.models.values()
        ],
    )


def routing_table_from_pb(message: pb.RoutingTable) -> RoutingTable:
    return RoutingTable(
        version=message.version,
        models={
            m.model: ModelRoute(
                model=m.model,
                parallel_slots=m.parallel_slots,
                context_length=m.context_length,
                created=m.created_unix,
                endpoints=tuple(
                    Endpoint(e.replica_id, e.node_id, e.url, e.ready, tuple(e.adapters)) for e in m.endpoints
                ),
            )
            for m in message.models
        },
    )


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
    )


def model_to_pb(view: ModelStatusView) -> pb.ModelStatus:
    return pb.ModelStatus(
        name=view.name,
        source=view.source,
        desired_replicas=view.desired_replicas,
        ready_replicas=view.ready_replicas,
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
            )
            for r in view.replicas
        ],
    )


def model_from_pb(message: pb.ModelStatus) -> ModelStatusView:
    spec = ModelSpec(name=message.name, source=message.source or "unknown", replicas=message.desired_replicas)
    return ModelStatusView(
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
            )
            for r in message.replicas
        ),
    )

"""The one place where the control plane converts agent protobuf messages to and from domain types."""

from __future__ import annotations

from controlplane.domain import Assignment, NodeHello, NodeStatus, ReplicaPhase, ReplicaReport
from protos.gen.llamafleet.agent.v1 import agent_pb2 as pb

_PHASES = {
    pb.REPLICA_PHASE_STARTING: ReplicaPhase.STARTING,
    pb.REPLICA_PHASE_READY: ReplicaPhase.READY,
    pb.REPLICA_PHASE_RESTARTING: ReplicaPhase.RESTARTING,
    pb.REPLICA_PHASE_FAILED: ReplicaPhase.FAILED,
    pb.REPLICA_PHASE_STOPPING: ReplicaPhase.STOPPING,
}
_ERRORS = {
    pb.REPLICA_ERROR_UNSPECIFIED: "",
    pb.REPLICA_ERROR_MODEL_NOT_FOUND: "model_not_found",
    pb.REPLICA_ERROR_MODEL_INVALID: "model_invalid",
    pb.REPLICA_ERROR_ENGINE_CRASHED: "engine_crashed",
    pb.REPLICA_ERROR_ENGINE_START_FAILED: "engine_start_failed",
}


def replica_report(status: pb.ReplicaStatus) -> ReplicaReport:
    return ReplicaReport(
        replica_id=status.replica_id,
        model=status.model,
        phase=_PHASES.get(status.phase, ReplicaPhase.STARTING),
        endpoint=status.endpoint,
        restarts=status.restarts,
        error=_ERRORS.get(status.error, ""),
        message=status.message,
        adapters=tuple(status.adapters),
    )


def node_hello(hello: pb.Hello) -> NodeHello:
    hw = hello.hardware
    return NodeHello(
        node_id=hello.node_id,
        hostname=hello.hostname,
        advertise_host=hello.advertise_host,
        labels=dict(hello.labels),
        cpu_model=hw.cpu_model,
        cpu_logical_cores=hw.cpu_logical_cores,
        ram_total_bytes=hw.ram_total_bytes,
        ram_free_bytes=hw.ram_free_bytes,
        devices=[f"{d.name} ({d.description})" for d in hw.devices],
        agent_version=hello.versions.agent,
        replicas=[replica_report(r) for r in hello.replicas],
        cached_models={m.source: m.size_bytes for m in hello.cached_models},
    )


def node_status(status: pb.Status) -> NodeStatus:
    return NodeStatus(
        applied_generation=status.applied_generation,
        ram_free_bytes=status.ram_free_bytes,
        replicas=[replica_report(r) for r in status.replicas],
        cached_models={m.source: m.size_bytes for m in status.cached_models},
    )


def assign(generation: int, a: Assignment) -> pb.ControlMessage:
    return pb.ControlMessage(
        assign=pb.Assign(
            generation=generation,
            replica=pb.ReplicaSpec(
                replica_id=a.replica_id,
                model=a.model,
                source=a.source,
                sha256=a.sha256,
                context_length=a.context_length,
                parallel_slots=a.parallel_slots,
                n_gpu_layers=a.n_gpu_layers,
                n_threads=a.n_threads,
                embeddings=a.embeddings,
                adapters=[pb.AdapterSpec(name=x.name, path=x.path, scale=x.scale) for x in a.adapters],
            ),
        )
    )


def unassign(generation: int, replica_id: str) -> pb.ControlMessage:
    return pb.ControlMessage(unassign=pb.Unassign(generation=generation, replica_id=replica_id))


def welcome(version: str, status_interval_s: float) -> pb.ControlMessage:
    return pb.ControlMessage(
        welcome=pb.Welcome(controlplane_version=version, status_interval_ms=int(status_interval_s * 1000))
    )

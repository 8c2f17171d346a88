"""The one place where the control plane converts agent protobuf messages to and from domain types."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from controlplane.domain import CachedModelInfo, NodeHello, NodeStatus, ReplicaPhase, ReplicaReport
from llamafleet.contract import replica_pb
from llamafleet.contract.replica import ReplicaSpec
from llamafleet.core.errors import ModelFileInvalid
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import Gpu
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
    pb.REPLICA_ERROR_SOURCE_DENIED: "source_denied",
    pb.REPLICA_ERROR_CHECKSUM_MISMATCH: "checksum_mismatch",
    pb.REPLICA_ERROR_DISK_FULL: "disk_full",
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
        spec=replica_pb.from_pb(status.spec) if status.HasField("spec") else None,
        engine_secret=status.engine_secret,
        download=(status.download_done_bytes, status.download_total_bytes, status.download_bytes_per_second),
        threads=status.threads,
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
        cpu_usable=hw.cpu_usable,
        cpu_summary=hw.cpu_summary,
        ram_total_bytes=hw.ram_total_bytes,
        ram_free_bytes=hw.ram_free_bytes,
        devices=[f"{d.name} ({d.description})" for d in hw.devices],
        agent_version=hello.versions.agent,
        replicas=[replica_report(r) for r in hello.replicas],
        cached_models={m.source: cached_model(m) for m in hello.cached_models},
        cpu_flags=tuple(hw.cpu_flags),
        nvml=nvml_summary(hw.nvml) if hw.HasField("nvml") else "",
        gpus=tuple(
            Gpu(
                d.name,
                d.memory_free_bytes,
                d.memory_total_bytes,
                "rpc" if d.kind == pb.DEVICE_KIND_RPC else "gpu",
            )
            for d in hw.devices
            if d.kind in (pb.DEVICE_KIND_GPU, pb.DEVICE_KIND_RPC)
        ),
    )


def nvml_summary(nvml: pb.Nvml) -> str:
    gib = 2**30
    gpus = "; ".join(
        f"{g.index}: {g.name} ({g.memory_free_bytes / gib:.1f}/{g.memory_total_bytes / gib:.1f} GiB free, "
        f"{g.utilization_percent}% busy, {g.uuid})"
        for g in nvml.gpus
    )
    return f"driver {nvml.driver_version}, CUDA {nvml.cuda_driver_version}" + (f"; {gpus}" if gpus else "")


def node_status(status: pb.Status) -> NodeStatus:
    return NodeStatus(
        applied_generation=status.applied_generation,
        ram_free_bytes=status.ram_free_bytes,
        replicas=[replica_report(r) for r in status.replicas],
        cached_models={m.source: cached_model(m) for m in status.cached_models},
        device_free={d.name: d.memory_free_bytes for d in status.devices},
        watched_version=status.watched_version,
    )


def model_profile(message: pb.ModelProfile) -> ModelProfile:
    """Field for field: the message mirrors the dataclass (same names)."""
    data: dict[str, Any] = {f.name: getattr(message, f.name) for f in fields(ModelProfile)}
    data = {k: list(v) if not isinstance(v, str | int | float | bool) else v for k, v in data.items()}
    data["repack_candidates"] = [(c.ggml_type, c.layer, c.bytes) for c in message.repack_candidates]
    return ModelProfile.from_dict(data)


def cached_model(m: pb.CachedModel) -> CachedModelInfo:
    """An agent's cached model; a profile that fails its checks becomes the error it is."""
    if not m.HasField("profile"):
        return CachedModelInfo(m.size_bytes, None, m.error)
    try:
        return CachedModelInfo(m.size_bytes, model_profile(m.profile).check(), m.error)
    except ModelFileInvalid as exc:
        return CachedModelInfo(m.size_bytes, None, exc.message)


def assign(generation: int, spec: ReplicaSpec) -> pb.ControlMessage:
    return pb.ControlMessage(assign=pb.Assign(generation=generation, replica=replica_pb.to_pb(spec)))


def unassign(generation: int, replica_id: str) -> pb.ControlMessage:
    return pb.ControlMessage(unassign=pb.Unassign(generation=generation, replica_id=replica_id))


def welcome(version: str, status_interval_s: float) -> pb.ControlMessage:
    return pb.ControlMessage(
        welcome=pb.Welcome(controlplane_version=version, status_interval_ms=int(status_interval_s * 1000))
    )


def watch_models(
    sources: tuple[str, ...], version: int, prefetch: dict[str, str] | None = None
) -> pb.ControlMessage:
    """``prefetch``: source → the sha256 its Model declares ("" when none)."""
    prefetch = prefetch or {}
    return pb.ControlMessage(
        watch_models=pb.WatchModels(
            sources=list(sources),
            version=version,
            prefetch=list(prefetch),
            prefetch_sha256={source: sha for source, sha in prefetch.items() if sha},
        )
    )

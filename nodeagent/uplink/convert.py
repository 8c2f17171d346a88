"""The one place where the agent converts between protobuf messages and its domain types."""

from __future__ import annotations

import platform

from llamafleet import __version__
from llamafleet.contract import replica_pb
from llamafleet.contract.replica import ReplicaSpec
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import Recommendation
from nodeagent.domain import (
    CachedModel,
    HostInventory,
    NodeReport,
    NvmlReport,
    Phase,
    ReplicaError,
    ReplicaState,
)
from protos.gen.llamafleet.agent.v1 import agent_pb2 as pb

_PHASES = {
    Phase.STARTING: pb.REPLICA_PHASE_STARTING,
    Phase.READY: pb.REPLICA_PHASE_READY,
    Phase.RESTARTING: pb.REPLICA_PHASE_RESTARTING,
    Phase.FAILED: pb.REPLICA_PHASE_FAILED,
    Phase.STOPPING: pb.REPLICA_PHASE_STOPPING,
}
_ERRORS = {
    ReplicaError.NONE: pb.REPLICA_ERROR_UNSPECIFIED,
    ReplicaError.MODEL_NOT_FOUND: pb.REPLICA_ERROR_MODEL_NOT_FOUND,
    ReplicaError.MODEL_INVALID: pb.REPLICA_ERROR_MODEL_INVALID,
    ReplicaError.ENGINE_CRASHED: pb.REPLICA_ERROR_ENGINE_CRASHED,
    ReplicaError.ENGINE_START_FAILED: pb.REPLICA_ERROR_ENGINE_START_FAILED,
    ReplicaError.SOURCE_DENIED: pb.REPLICA_ERROR_SOURCE_DENIED,
    ReplicaError.CHECKSUM_MISMATCH: pb.REPLICA_ERROR_CHECKSUM_MISMATCH,
    ReplicaError.DISK_FULL: pb.REPLICA_ERROR_DISK_FULL,
}
_KINDS = {
    "cpu": pb.DEVICE_KIND_CPU,
    "gpu": pb.DEVICE_KIND_GPU,
    "accel": pb.DEVICE_KIND_ACCEL,
    "rpc": pb.DEVICE_KIND_RPC,
}


def replica_status(state: ReplicaState) -> pb.ReplicaStatus:
    return pb.ReplicaStatus(
        replica_id=state.spec.replica_id,
        model=state.spec.model,
        phase=_PHASES[state.phase],
        endpoint=state.endpoint,
        restarts=state.restarts,
        error=_ERRORS[state.error],
        message=state.message,
        pid=state.pid,
        generation=state.generation,
        adapters=list(state.adapters),
        spec=replica_pb.to_pb(state.spec),
        engine_secret=state.secret,
        download_done_bytes=state.download[0],
        download_total_bytes=state.download[1],
        download_bytes_per_second=state.download[2],
        threads=state.threads,
    )


def model_profile(p: ModelProfile) -> pb.ModelProfile:
    """Field for field: the message mirrors the dataclass (same names)."""
    fields = p.to_dict()
    fields["repack_candidates"] = [
        pb.RepackCandidate(ggml_type=kind, layer=layer, bytes=n) for kind, layer, n in p.repack_candidates
    ]
    return pb.ModelProfile(**fields)


def fit_summary(rec: Recommendation) -> pb.FitSummary:
    cpu = rec.cpu_mode
    return pb.FitSummary(
        context_length=cpu.context_length,
        parallel=1,
        cpu_ram_bytes=cpu.ram_bytes,
        fits=rec.fits,
        max_context_length=cpu.max_context_length,
        recommend_ngl=max((m.recommend_ngl for m in rec.gpu_mode), default=0),
        reason="" if rec.fits else rec.reason(),
    )


def cached_model(model: CachedModel) -> pb.CachedModel:
    return pb.CachedModel(
        source=model.source,
        path=model.path,
        size_bytes=model.size_bytes,
        profile=model_profile(model.profile) if model.profile else None,
        error=model.error,
        fit=fit_summary(model.fit) if model.fit else None,
    )


def nvml(report: NvmlReport | None) -> pb.Nvml | None:
    if report is None:
        return None
    return pb.Nvml(
        driver_version=report.driver_version,
        cuda_driver_version=report.cuda_driver_version,
        gpus=[
            pb.NvmlGpu(
                index=g.index,
                name=g.name,
                uuid=g.uuid,
                memory_total_bytes=g.memory_total_bytes,
                memory_free_bytes=g.memory_free_bytes,
                utilization_percent=g.utilization_percent,
            )
            for g in report.gpus
        ],
    )


def hello(
    node_id: str,
    labels: dict[str, str],
    advertise_host: str,
    inventory: HostInventory,
    report: NodeReport,
) -> pb.AgentMessage:
    hardware = pb.Hardware(
        cpu_model=inventory.cpu_model,
        cpu_physical_cores=inventory.cpu_physical_cores,
        cpu_logical_cores=inventory.cpu_logical_cores,
        ram_total_bytes=inventory.ram_total_bytes,
        ram_free_bytes=report.ram_free_bytes,
        devices=[
            pb.Device(
                name=d.name,
                description=d.description,
                kind=_KINDS.get(d.kind, pb.DEVICE_KIND_UNSPECIFIED),
                backend=d.backend,
                memory_total_bytes=d.memory_total_bytes,
                memory_free_bytes=report.device_free.get(d.name, d.memory_free_bytes),
            )
            for d in inventory.devices
        ],
        cpu_flags=list(inventory.cpu_flags),
        nvml=nvml(inventory.nvml),
        cpu_usable=inventory.cpus.usable if inventory.cpus else 0,
        cpu_summary=inventory.cpus.describe() if inventory.cpus else "",
    )
    versions = pb.Versions(
        agent=__version__,
        llama_cpp_python=inventory.llama_cpp_version,
        python=platform.python_version(),
        backends=list(inventory.backends),
    )
    return pb.AgentMessage(
        hello=pb.Hello(
            node_id=node_id,
            hostname=inventory.hostname,
            advertise_host=advertise_host,
            labels=labels,
            versions=versions,
            hardware=hardware,
            replicas=[replica_status(r) for r in report.replicas],
            cached_models=[cached_model(m) for m in report.cached_models],
        )
    )


def status(report: NodeReport) -> pb.AgentMessage:
    return pb.AgentMessage(
        status=pb.Status(
            applied_generation=report.applied_generation,
            ram_free_bytes=report.ram_free_bytes,
            devices=[pb.DeviceMemory(name=n, memory_free_bytes=b) for n, b in report.device_free.items()],
            replicas=[replica_status(r) for r in report.replicas],
            cached_models=[cached_model(m) for m in report.cached_models],
            watched_version=report.watched_version,
        )
    )


def replica_spec(spec: pb.ReplicaSpec) -> ReplicaSpec:
    return replica_pb.from_pb(spec)

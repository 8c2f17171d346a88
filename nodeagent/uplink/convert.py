"""The one place where the agent converts between protobuf messages and its domain types."""

from __future__ import annotations

import dataclasses
import platform

from llamafleet import __version__
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import Recommendation
from nodeagent.domain import (
    AdapterSpec,
    CachedModel,
    HostInventory,
    NodeReport,
    NvmlReport,
    Phase,
    RemotePartSpec,
    ReplicaError,
    ReplicaSpec,
    ReplicaState,
    Role,
    RpcLease,
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


_ROLES = {Role.ENGINE: pb.REPLICA_ROLE_ENGINE, Role.RPC_WORKER: pb.REPLICA_ROLE_RPC_WORKER}


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
        spec=replica_spec_to_pb(state.spec),
        engine_secret=state.secret,
        download_done_bytes=state.download[0],
        download_total_bytes=state.download[1],
        download_bytes_per_second=state.download[2],
        threads=state.threads,
    )


def replica_spec_to_pb(spec: ReplicaSpec) -> pb.ReplicaSpec:
    return pb.ReplicaSpec(
        replica_id=spec.replica_id,
        model=spec.model,
        source=spec.source,
        sha256=spec.sha256,
        context_length=spec.context_length,
        parallel_slots=spec.parallel_slots,
        n_gpu_layers=spec.n_gpu_layers,
        n_threads=spec.n_threads,
        embeddings=spec.embeddings,
        adapters=[pb.AdapterSpec(name=a.name, path=a.path, scale=a.scale) for a in spec.adapters],
        remote_parts=[
            pb.RemotePart(
                node_id=p.node_id, endpoint=p.endpoint, first_layer=p.first_layer, last_layer=p.last_layer
            )
            for p in spec.remote_parts
        ],
        role=_ROLES[spec.role],
        lease=pb.RpcLease(**dataclasses.asdict(spec.lease)) if spec.lease else None,
        request_defaults=spec.request_defaults,
        chat_template=spec.chat_template,
        pooling=spec.pooling,
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
    return ReplicaSpec(
        replica_id=spec.replica_id,
        model=spec.model,
        source=spec.source,
        sha256=spec.sha256,
        context_length=spec.context_length or 2048,
        parallel_slots=spec.parallel_slots or 1,
        n_gpu_layers=spec.n_gpu_layers,
        n_threads=spec.n_threads,
        embeddings=spec.embeddings,
        adapters=tuple(AdapterSpec(a.name, a.path, a.scale or 1.0) for a in spec.adapters),
        remote_parts=tuple(
            RemotePartSpec(p.node_id, p.endpoint, p.first_layer, p.last_layer) for p in spec.remote_parts
        ),
        role=next(role for role, value in _ROLES.items() if value == spec.role),
        request_defaults=spec.request_defaults,
        chat_template=spec.chat_template,
        pooling=spec.pooling or "auto",
        # the message mirrors the dataclass (same field names)
        lease=RpcLease(**{f.name: getattr(spec.lease, f.name) for f in dataclasses.fields(RpcLease)})
        if spec.HasField("lease")
        else None,
    )

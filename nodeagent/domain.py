"""The agent's own types: what it is asked to run and what it reports. No protobuf here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import Recommendation


@dataclass(frozen=True)
class ReplicaSpec:
    replica_id: str
    model: str
    source: str
    sha256: str = ""
    context_length: int = 2048
    parallel_slots: int = 4
    n_gpu_layers: int = -1
    n_threads: int = 0
    embeddings: bool = False
    adapters: tuple[AdapterSpec, ...] = ()
    remote_parts: tuple[RemotePartSpec, ...] = ()  # a split head: ranges other nodes' workers hold
    role: Role = field(default_factory=lambda: Role.ENGINE)
    lease: RpcLease | None = None  # an RPC worker: the one head it serves
    request_defaults: str = ""  # JSON: the model's request defaults (the engine's --request-defaults)
    chat_template: str = ""  # Jinja replacing the GGUF's template (the engine's --chat-template-file)
    pooling: str = "auto"  # embedding pooling (the engine's --pooling)


class Role(enum.Enum):
    ENGINE = "engine"
    RPC_WORKER = "rpc_worker"


@dataclass(frozen=True)
class RemotePartSpec:
    """A layer range of a split model held by an RPC worker on another node, reached at its gate."""

    node_id: str
    endpoint: str  # host:port of the worker's gate
    first_layer: int
    last_layer: int


@dataclass(frozen=True)
class RpcLease:
    """The one head an RPC worker serves; its gate refuses every other peer."""

    head_node_id: str
    head_address: str
    replica_id: str
    first_layer: int = 0
    last_layer: int = 0


@dataclass(frozen=True)
class AdapterSpec:
    """A LoRA adapter GGUF on this node that the engine loads at start."""

    name: str
    path: str
    scale: float = 1.0


class Phase(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPING = "stopping"


class ReplicaError(enum.Enum):
    NONE = "none"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_INVALID = "model_invalid"
    ENGINE_CRASHED = "engine_crashed"
    ENGINE_START_FAILED = "engine_start_failed"
    SOURCE_DENIED = "source_denied"  # the model's source refused us: a token is missing
    CHECKSUM_MISMATCH = "checksum_mismatch"  # the file is not the one the model's sha256 names
    DISK_FULL = "disk_full"  # no room in the model cache, even after evicting unused models


@dataclass(frozen=True)
class ReplicaState:
    spec: ReplicaSpec
    generation: int
    phase: Phase = Phase.STARTING
    endpoint: str = ""
    restarts: int = 0
    error: ReplicaError = ReplicaError.NONE
    message: str = ""
    pid: int = 0
    adapters: tuple[str, ...] = ()  # loaded in the engine, as its /health last said
    secret: str = field(default="", repr=False)  # the engine's request secret (never logged)
    download: tuple[int, int, float] = (0, 0, 0.0)  # its model file downloading: done, total, bytes/s
    threads: int = 0  # CPU threads it computes with now (0: not started yet)


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    kind: str  # "cpu" | "gpu" | "accel" | "rpc"
    backend: str
    memory_total_bytes: int
    memory_free_bytes: int


@dataclass(frozen=True)
class CpuBudget:
    """What engines on this node may use in all; ``usable`` is the thread count they share."""

    logical: int  # CPUs in the affinity mask
    physical: int  # distinct cores among them
    quota_millis: int  # the cgroup's CPU limit in thousandths of a CPU; 0: none
    usable: int

    def describe(self) -> str:
        """For people: '2 (2 cores)', '1 (cgroup quota 1.5 CPUs of 4 cores)'."""
        cores = f"{self.physical} core{'s' if self.physical != 1 else ''}"
        if self.logical != self.physical:
            cores += f", {self.logical} logical"
        if self.quota_millis and self.quota_millis < self.physical * 1000:
            return f"{self.usable} (cgroup quota {self.quota_millis / 1000:g} CPUs of {cores})"
        return f"{self.usable} ({cores})"


@dataclass(frozen=True)
class HostInventory:
    hostname: str
    cpu_model: str
    cpu_physical_cores: int
    cpu_logical_cores: int
    ram_total_bytes: int
    ram_free_bytes: int
    devices: tuple[Device, ...] = ()
    backends: tuple[str, ...] = ()
    llama_cpp_version: str = ""
    cpu_flags: tuple[str, ...] = ()  # llama.cpp-relevant CPU features (avx2, asimddp …)
    nvml: NvmlReport | None = None  # the NVIDIA driver's view, when there is one
    cpus: CpuBudget | None = None  # the CPUs engines may use (affinity, cores, cgroup quota)


@dataclass(frozen=True)
class NvmlGpu:
    index: int
    name: str
    uuid: str
    memory_total_bytes: int
    memory_free_bytes: int
    utilization_percent: int


@dataclass(frozen=True)
class NvmlReport:
    driver_version: str
    cuda_driver_version: str
    gpus: tuple[NvmlGpu, ...] = ()


@dataclass(frozen=True)
class CachedModel:
    source: str
    path: str
    size_bytes: int
    profile: ModelProfile | None = None  # None when the header is unreadable
    error: str = ""  # why, for people
    fit: Recommendation | None = None  # this node's verdict at the default context, one slot


@dataclass(frozen=True)
class NodeReport:
    """One Status: everything the control plane should know about this node right now."""

    applied_generation: int
    ram_free_bytes: int
    device_free: dict[str, int] = field(default_factory=dict)
    replicas: tuple[ReplicaState, ...] = ()
    cached_models: tuple[CachedModel, ...] = ()
    watched_version: int = 0  # the WatchModels list cached_models answers

"""The agent's own types: what it is asked to run and what it reports. No protobuf here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from llamafleet.contract.replica import ReplicaSpec
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import Recommendation


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

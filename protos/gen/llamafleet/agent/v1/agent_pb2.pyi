from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_KIND_UNSPECIFIED: _ClassVar[DeviceKind]
    DEVICE_KIND_CPU: _ClassVar[DeviceKind]
    DEVICE_KIND_GPU: _ClassVar[DeviceKind]
    DEVICE_KIND_ACCEL: _ClassVar[DeviceKind]
    DEVICE_KIND_RPC: _ClassVar[DeviceKind]

class ReplicaPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_PHASE_UNSPECIFIED: _ClassVar[ReplicaPhase]
    REPLICA_PHASE_STARTING: _ClassVar[ReplicaPhase]
    REPLICA_PHASE_READY: _ClassVar[ReplicaPhase]
    REPLICA_PHASE_RESTARTING: _ClassVar[ReplicaPhase]
    REPLICA_PHASE_FAILED: _ClassVar[ReplicaPhase]
    REPLICA_PHASE_STOPPING: _ClassVar[ReplicaPhase]

class ReplicaError(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_ERROR_UNSPECIFIED: _ClassVar[ReplicaError]
    REPLICA_ERROR_MODEL_NOT_FOUND: _ClassVar[ReplicaError]
    REPLICA_ERROR_MODEL_INVALID: _ClassVar[ReplicaError]
    REPLICA_ERROR_ENGINE_CRASHED: _ClassVar[ReplicaError]
    REPLICA_ERROR_ENGINE_START_FAILED: _ClassVar[ReplicaError]
    REPLICA_ERROR_SOURCE_DENIED: _ClassVar[ReplicaError]
    REPLICA_ERROR_CHECKSUM_MISMATCH: _ClassVar[ReplicaError]
    REPLICA_ERROR_DISK_FULL: _ClassVar[ReplicaError]

class ReplicaRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_ROLE_ENGINE: _ClassVar[ReplicaRole]
    REPLICA_ROLE_RPC_WORKER: _ClassVar[ReplicaRole]
DEVICE_KIND_UNSPECIFIED: DeviceKind
DEVICE_KIND_CPU: DeviceKind
DEVICE_KIND_GPU: DeviceKind
DEVICE_KIND_ACCEL: DeviceKind
DEVICE_KIND_RPC: DeviceKind
REPLICA_PHASE_UNSPECIFIED: ReplicaPhase
REPLICA_PHASE_STARTING: ReplicaPhase
REPLICA_PHASE_READY: ReplicaPhase
REPLICA_PHASE_RESTARTING: ReplicaPhase
REPLICA_PHASE_FAILED: ReplicaPhase
REPLICA_PHASE_STOPPING: ReplicaPhase
REPLICA_ERROR_UNSPECIFIED: ReplicaError
REPLICA_ERROR_MODEL_NOT_FOUND: ReplicaError
REPLICA_ERROR_MODEL_INVALID: ReplicaError
REPLICA_ERROR_ENGINE_CRASHED: ReplicaError
REPLICA_ERROR_ENGINE_START_FAILED: ReplicaError
REPLICA_ERROR_SOURCE_DENIED: ReplicaError
REPLICA_ERROR_CHECKSUM_MISMATCH: ReplicaError
REPLICA_ERROR_DISK_FULL: ReplicaError
REPLICA_ROLE_ENGINE: ReplicaRole
REPLICA_ROLE_RPC_WORKER: ReplicaRole

class JoinRequest(_message.Message):
    __slots__ = ("node_id", "bootstrap_token", "csr_pem")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    bootstrap_token: str
    csr_pem: bytes
    def __init__(self, node_id: _Optional[str] = ..., bootstrap_token: _Optional[str] = ..., csr_pem: _Optional[bytes] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ...) -> None: ...

class NodeCredential(_message.Message):
    __slots__ = ("certificate_pem", "ca_pem")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    ca_pem: bytes
    def __init__(self, certificate_pem: _Optional[bytes] = ..., ca_pem: _Optional[bytes] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "status")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    status: Status
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., status: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class ControlMessage(_message.Message):
    __slots__ = ("welcome", "assign", "unassign", "watch_models")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_FIELD_NUMBER: _ClassVar[int]
    UNASSIGN_FIELD_NUMBER: _ClassVar[int]
    WATCH_MODELS_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    assign: Assign
    unassign: Unassign
    watch_models: WatchModels
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., assign: _Optional[_Union[Assign, _Mapping]] = ..., unassign: _Optional[_Union[Unassign, _Mapping]] = ..., watch_models: _Optional[_Union[WatchModels, _Mapping]] = ...) -> None: ...

class WatchModels(_message.Message):
    __slots__ = ("sources", "version", "prefetch", "prefetch_sha256")
    class PrefetchSha256Entry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_SHA256_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedScalarFieldContainer[str]
    version: int
    prefetch: _containers.RepeatedScalarFieldContainer[str]
    prefetch_sha256: _containers.ScalarMap[str, str]
    def __init__(self, sources: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ..., prefetch: _Optional[_Iterable[str]] = ..., prefetch_sha256: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node_id", "hostname", "advertise_host", "labels", "versions", "hardware", "replicas", "cached_models")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_HOST_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CACHED_MODELS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    hostname: str
    advertise_host: str
    labels: _containers.ScalarMap[str, str]
    versions: Versions
    hardware: Hardware
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    cached_models: _containers.RepeatedCompositeFieldContainer[CachedModel]
    def __init__(self, node_id: _Optional[str] = ..., hostname: _Optional[str] = ..., advertise_host: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., versions: _Optional[_Union[Versions, _Mapping]] = ..., hardware: _Optional[_Union[Hardware, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., cached_models: _Optional[_Iterable[_Union[CachedModel, _Mapping]]] = ...) -> None: ...

class Versions(_message.Message):
    __slots__ = ("agent", "llama_cpp_python", "python", "backends")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    LLAMA_CPP_PYTHON_FIELD_NUMBER: _ClassVar[int]
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    llama_cpp_python: str
    python: str
    backends: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent: _Optional[str] = ..., llama_cpp_python: _Optional[str] = ..., python: _Optional[str] = ..., backends: _Optional[_Iterable[str]] = ...) -> None: ...

class Hardware(_message.Message):
    __slots__ = ("cpu_model", "cpu_physical_cores", "cpu_logical_cores", "ram_total_bytes", "ram_free_bytes", "devices", "cpu_flags", "nvml", "cpu_usable", "cpu_summary")
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    CPU_PHYSICAL_CORES_FIELD_NUMBER: _ClassVar[int]
    CPU_LOGICAL_CORES_FIELD_NUMBER: _ClassVar[int]
    RAM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAM_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    CPU_FLAGS_FIELD_NUMBER: _ClassVar[int]
    NVML_FIELD_NUMBER: _ClassVar[int]
    CPU_USABLE_FIELD_NUMBER: _ClassVar[int]
    CPU_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    cpu_model: str
    cpu_physical_cores: int
    cpu_logical_cores: int
    ram_total_bytes: int
    ram_free_bytes: int
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    cpu_flags: _containers.RepeatedScalarFieldContainer[str]
    nvml: Nvml
    cpu_usable: int
    cpu_summary: str
    def __init__(self, cpu_model: _Optional[str] = ..., cpu_physical_cores: _Optional[int] = ..., cpu_logical_cores: _Optional[int] = ..., ram_total_bytes: _Optional[int] = ..., ram_free_bytes: _Optional[int] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., cpu_flags: _Optional[_Iterable[str]] = ..., nvml: _Optional[_Union[Nvml, _Mapping]] = ..., cpu_usable: _Optional[int] = ..., cpu_summary: _Optional[str] = ...) -> None: ...

class Nvml(_message.Message):
    __slots__ = ("driver_version", "cuda_driver_version", "gpus")
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUDA_DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    driver_version: str
    cuda_driver_version: str
    gpus: _containers.RepeatedCompositeFieldContainer[NvmlGpu]
    def __init__(self, driver_version: _Optional[str] = ..., cuda_driver_version: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[NvmlGpu, _Mapping]]] = ...) -> None: ...

class NvmlGpu(_message.Message):
    __slots__ = ("index", "name", "uuid", "memory_total_bytes", "memory_free_bytes", "utilization_percent")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    uuid: str
    memory_total_bytes: int
    memory_free_bytes: int
    utilization_percent: int
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., uuid: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ..., utilization_percent: _Optional[int] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("name", "description", "kind", "backend", "memory_total_bytes", "memory_free_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    kind: DeviceKind
    backend: str
    memory_total_bytes: int
    memory_free_bytes: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., kind: _Optional[_Union[DeviceKind, str]] = ..., backend: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("applied_generation", "ram_free_bytes", "devices", "replicas", "cached_models", "watched_version")
    APPLIED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    RAM_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CACHED_MODELS_FIELD_NUMBER: _ClassVar[int]
    WATCHED_VERSION_FIELD_NUMBER: _ClassVar[int]
    applied_generation: int
    ram_free_bytes: int
    devices: _containers.RepeatedCompositeFieldContainer[DeviceMemory]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    cached_models: _containers.RepeatedCompositeFieldContainer[CachedModel]
    watched_version: int
    def __init__(self, applied_generation: _Optional[int] = ..., ram_free_bytes: _Optional[int] = ..., devices: _Optional[_Iterable[_Union[DeviceMemory, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., cached_models: _Optional[_Iterable[_Union[CachedModel, _Mapping]]] = ..., watched_version: _Optional[int] = ...) -> None: ...

class DeviceMemory(_message.Message):
    __slots__ = ("name", "memory_free_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    memory_free_bytes: int
    def __init__(self, name: _Optional[str] = ..., memory_free_bytes: _Optional[int] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("replica_id", "model", "phase", "endpoint", "restarts", "error", "message", "pid", "generation", "adapters", "spec", "engine_secret", "download_done_bytes", "download_total_bytes", "download_bytes_per_second", "threads")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ENGINE_SECRET_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_DONE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    model: str
    phase: ReplicaPhase
    endpoint: str
    restarts: int
    error: ReplicaError
    message: str
    pid: int
    generation: int
    adapters: _containers.RepeatedScalarFieldContainer[str]
    spec: ReplicaSpec
    engine_secret: str
    download_done_bytes: int
    download_total_bytes: int
    download_bytes_per_second: float
    threads: int
    def __init__(self, replica_id: _Optional[str] = ..., model: _Optional[str] = ..., phase: _Optional[_Union[ReplicaPhase, str]] = ..., endpoint: _Optional[str] = ..., restarts: _Optional[int] = ..., error: _Optional[_Union[ReplicaError, str]] = ..., message: _Optional[str] = ..., pid: _Optional[int] = ..., generation: _Optional[int] = ..., adapters: _Optional[_Iterable[str]] = ..., spec: _Optional[_Union[ReplicaSpec, _Mapping]] = ..., engine_secret: _Optional[str] = ..., download_done_bytes: _Optional[int] = ..., download_total_bytes: _Optional[int] = ..., download_bytes_per_second: _Optional[float] = ..., threads: _Optional[int] = ...) -> None: ...

class CachedModel(_message.Message):
    __slots__ = ("source", "path", "size_bytes", "profile", "error", "fit")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FIT_FIELD_NUMBER: _ClassVar[int]
    source: str
    path: str
    size_bytes: int
    profile: ModelProfile
    error: str
    fit: FitSummary
    def __init__(self, source: _Optional[str] = ..., path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., profile: _Optional[_Union[ModelProfile, _Mapping]] = ..., error: _Optional[str] = ..., fit: _Optional[_Union[FitSummary, _Mapping]] = ...) -> None: ...

class ModelProfile(_message.Message):
    __slots__ = ("name", "architecture", "file_size", "n_layer", "n_embd", "n_head", "n_head_kv", "head_dim_k", "head_dim_v", "sliding_window", "swa_layers", "vocab_size", "tied_output", "context_length", "layer_weight_bytes", "input_weight_bytes", "output_weight_bytes", "token_embd_bytes", "repack_candidates", "n_ff", "gated_ffn", "qk_norm", "post_norms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    N_LAYER_FIELD_NUMBER: _ClassVar[int]
    N_EMBD_FIELD_NUMBER: _ClassVar[int]
    N_HEAD_FIELD_NUMBER: _ClassVar[int]
    N_HEAD_KV_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_K_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_V_FIELD_NUMBER: _ClassVar[int]
    SLIDING_WINDOW_FIELD_NUMBER: _ClassVar[int]
    SWA_LAYERS_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    TIED_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LAYER_WEIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    INPUT_WEIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_WEIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EMBD_BYTES_FIELD_NUMBER: _ClassVar[int]
    REPACK_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    N_FF_FIELD_NUMBER: _ClassVar[int]
    GATED_FFN_FIELD_NUMBER: _ClassVar[int]
    QK_NORM_FIELD_NUMBER: _ClassVar[int]
    POST_NORMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    architecture: str
    file_size: int
    n_layer: int
    n_embd: int
    n_head: _containers.RepeatedScalarFieldContainer[int]
    n_head_kv: _containers.RepeatedScalarFieldContainer[int]
    head_dim_k: int
    head_dim_v: int
    sliding_window: int
    swa_layers: _containers.RepeatedScalarFieldContainer[bool]
    vocab_size: int
    tied_output: bool
    context_length: int
    layer_weight_bytes: _containers.RepeatedScalarFieldContainer[int]
    input_weight_bytes: int
    output_weight_bytes: int
    token_embd_bytes: int
    repack_candidates: _containers.RepeatedCompositeFieldContainer[RepackCandidate]
    n_ff: _containers.RepeatedScalarFieldContainer[int]
    gated_ffn: bool
    qk_norm: bool
    post_norms: bool
    def __init__(self, name: _Optional[str] = ..., architecture: _Optional[str] = ..., file_size: _Optional[int] = ..., n_layer: _Optional[int] = ..., n_embd: _Optional[int] = ..., n_head: _Optional[_Iterable[int]] = ..., n_head_kv: _Optional[_Iterable[int]] = ..., head_dim_k: _Optional[int] = ..., head_dim_v: _Optional[int] = ..., sliding_window: _Optional[int] = ..., swa_layers: _Optional[_Iterable[bool]] = ..., vocab_size: _Optional[int] = ..., tied_output: _Optional[bool] = ..., context_length: _Optional[int] = ..., layer_weight_bytes: _Optional[_Iterable[int]] = ..., input_weight_bytes: _Optional[int] = ..., output_weight_bytes: _Optional[int] = ..., token_embd_bytes: _Optional[int] = ..., repack_candidates: _Optional[_Iterable[_Union[RepackCandidate, _Mapping]]] = ..., n_ff: _Optional[_Iterable[int]] = ..., gated_ffn: _Optional[bool] = ..., qk_norm: _Optional[bool] = ..., post_norms: _Optional[bool] = ...) -> None: ...

class RepackCandidate(_message.Message):
    __slots__ = ("ggml_type", "layer", "bytes")
    GGML_TYPE_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ggml_type: str
    layer: int
    bytes: int
    def __init__(self, ggml_type: _Optional[str] = ..., layer: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class FitSummary(_message.Message):
    __slots__ = ("context_length", "parallel", "cpu_ram_bytes", "fits", "max_context_length", "recommend_ngl", "reason")
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_FIELD_NUMBER: _ClassVar[int]
    CPU_RAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    FITS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    RECOMMEND_NGL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    context_length: int
    parallel: int
    cpu_ram_bytes: int
    fits: bool
    max_context_length: int
    recommend_ngl: int
    reason: str
    def __init__(self, context_length: _Optional[int] = ..., parallel: _Optional[int] = ..., cpu_ram_bytes: _Optional[int] = ..., fits: _Optional[bool] = ..., max_context_length: _Optional[int] = ..., recommend_ngl: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("controlplane_version", "status_interval_ms")
    CONTROLPLANE_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    controlplane_version: str
    status_interval_ms: int
    def __init__(self, controlplane_version: _Optional[str] = ..., status_interval_ms: _Optional[int] = ...) -> None: ...

class Assign(_message.Message):
    __slots__ = ("generation", "replica")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    generation: int
    replica: ReplicaSpec
    def __init__(self, generation: _Optional[int] = ..., replica: _Optional[_Union[ReplicaSpec, _Mapping]] = ...) -> None: ...

class ReplicaSpec(_message.Message):
    __slots__ = ("replica_id", "model", "source", "sha256", "context_length", "parallel_slots", "n_gpu_layers", "n_threads", "embeddings", "adapters", "remote_parts", "role", "lease", "request_defaults", "chat_template", "pooling", "speculative", "draft_source", "draft_sha256", "cache_ram")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_SLOTS_FIELD_NUMBER: _ClassVar[int]
    N_GPU_LAYERS_FIELD_NUMBER: _ClassVar[int]
    N_THREADS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PARTS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    SPECULATIVE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_SHA256_FIELD_NUMBER: _ClassVar[int]
    CACHE_RAM_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    model: str
    source: str
    sha256: str
    context_length: int
    parallel_slots: int
    n_gpu_layers: int
    n_threads: int
    embeddings: bool
    adapters: _containers.RepeatedCompositeFieldContainer[AdapterSpec]
    remote_parts: _containers.RepeatedCompositeFieldContainer[RemotePart]
    role: ReplicaRole
    lease: RpcLease
    request_defaults: str
    chat_template: str
    pooling: str
    speculative: str
    draft_source: str
    draft_sha256: str
    cache_ram: int
    def __init__(self, replica_id: _Optional[str] = ..., model: _Optional[str] = ..., source: _Optional[str] = ..., sha256: _Optional[str] = ..., context_length: _Optional[int] = ..., parallel_slots: _Optional[int] = ..., n_gpu_layers: _Optional[int] = ..., n_threads: _Optional[int] = ..., embeddings: _Optional[bool] = ..., adapters: _Optional[_Iterable[_Union[AdapterSpec, _Mapping]]] = ..., remote_parts: _Optional[_Iterable[_Union[RemotePart, _Mapping]]] = ..., role: _Optional[_Union[ReplicaRole, str]] = ..., lease: _Optional[_Union[RpcLease, _Mapping]] = ..., request_defaults: _Optional[str] = ..., chat_template: _Optional[str] = ..., pooling: _Optional[str] = ..., speculative: _Optional[str] = ..., draft_source: _Optional[str] = ..., draft_sha256: _Optional[str] = ..., cache_ram: _Optional[int] = ...) -> None: ...

class RemotePart(_message.Message):
    __slots__ = ("node_id", "endpoint", "first_layer", "last_layer")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    FIRST_LAYER_FIELD_NUMBER: _ClassVar[int]
    LAST_LAYER_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    endpoint: str
    first_layer: int
    last_layer: int
    def __init__(self, node_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., first_layer: _Optional[int] = ..., last_layer: _Optional[int] = ...) -> None: ...

class RpcLease(_message.Message):
    __slots__ = ("head_node_id", "head_address", "replica_id", "first_layer", "last_layer")
    HEAD_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_LAYER_FIELD_NUMBER: _ClassVar[int]
    LAST_LAYER_FIELD_NUMBER: _ClassVar[int]
    head_node_id: str
    head_address: str
    replica_id: str
    first_layer: int
    last_layer: int
    def __init__(self, head_node_id: _Optional[str] = ..., head_address: _Optional[str] = ..., replica_id: _Optional[str] = ..., first_layer: _Optional[int] = ..., last_layer: _Optional[int] = ...) -> None: ...

class AdapterSpec(_message.Message):
    __slots__ = ("name", "path", "scale")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    scale: float
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., scale: _Optional[float] = ...) -> None: ...

class Unassign(_message.Message):
    __slots__ = ("generation", "replica_id")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    generation: int
    replica_id: str
    def __init__(self, generation: _Optional[int] = ..., replica_id: _Optional[str] = ...) -> None: ...

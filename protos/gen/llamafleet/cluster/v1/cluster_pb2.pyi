from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoadReport(_message.Message):
    __slots__ = ("gateway_id", "models")
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    gateway_id: str
    models: _containers.RepeatedCompositeFieldContainer[ModelLoad]
    def __init__(self, gateway_id: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelLoad, _Mapping]]] = ...) -> None: ...

class ModelLoad(_message.Message):
    __slots__ = ("model", "in_engines", "queued", "last_request_unix")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IN_ENGINES_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    LAST_REQUEST_UNIX_FIELD_NUMBER: _ClassVar[int]
    model: str
    in_engines: int
    queued: int
    last_request_unix: float
    def __init__(self, model: _Optional[str] = ..., in_engines: _Optional[int] = ..., queued: _Optional[int] = ..., last_request_unix: _Optional[float] = ...) -> None: ...

class LoadReportAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CordonNodeRequest(_message.Message):
    __slots__ = ("node_id", "cordoned")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CORDONED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    cordoned: bool
    def __init__(self, node_id: _Optional[str] = ..., cordoned: _Optional[bool] = ...) -> None: ...

class ForgetNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class ForgetNodeResponse(_message.Message):
    __slots__ = ("was_pinned", "was_connected")
    WAS_PINNED_FIELD_NUMBER: _ClassVar[int]
    WAS_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    was_pinned: bool
    was_connected: bool
    def __init__(self, was_pinned: _Optional[bool] = ..., was_connected: _Optional[bool] = ...) -> None: ...

class WatchRoutesRequest(_message.Message):
    __slots__ = ("gateway_id",)
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    gateway_id: str
    def __init__(self, gateway_id: _Optional[str] = ...) -> None: ...

class RoutingTable(_message.Message):
    __slots__ = ("version", "models", "settling")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SETTLING_FIELD_NUMBER: _ClassVar[int]
    version: int
    models: _containers.RepeatedCompositeFieldContainer[ModelRoute]
    settling: bool
    def __init__(self, version: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelRoute, _Mapping]]] = ..., settling: _Optional[bool] = ...) -> None: ...

class ModelRoute(_message.Message):
    __slots__ = ("model", "parallel_slots", "context_length", "endpoints", "created_unix", "recommendation", "balancer", "target_replicas", "holds", "hold_seconds", "adapters")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_SLOTS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_FIELD_NUMBER: _ClassVar[int]
    BALANCER_FIELD_NUMBER: _ClassVar[int]
    TARGET_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    HOLD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    model: str
    parallel_slots: int
    context_length: int
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    created_unix: int
    recommendation: Recommendation
    balancer: str
    target_replicas: int
    holds: bool
    hold_seconds: float
    adapters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., parallel_slots: _Optional[int] = ..., context_length: _Optional[int] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., created_unix: _Optional[int] = ..., recommendation: _Optional[_Union[Recommendation, _Mapping]] = ..., balancer: _Optional[str] = ..., target_replicas: _Optional[int] = ..., holds: _Optional[bool] = ..., hold_seconds: _Optional[float] = ..., adapters: _Optional[_Iterable[str]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("replica_id", "node_id", "url", "ready", "adapters", "secret")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    node_id: str
    url: str
    ready: bool
    adapters: _containers.RepeatedScalarFieldContainer[str]
    secret: str
    def __init__(self, replica_id: _Optional[str] = ..., node_id: _Optional[str] = ..., url: _Optional[str] = ..., ready: _Optional[bool] = ..., adapters: _Optional[_Iterable[str]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "hostname", "connected", "cpu_model", "cpu_logical_cores", "ram_total_bytes", "ram_free_bytes", "devices", "desired_generation", "applied_generation", "replicas", "agent_version", "last_seen_unix", "cpu_flags", "nvml", "cordoned", "cpu_usable", "cpu_summary", "threads", "labels", "advertise_host", "unschedulable", "draining", "deleted")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    CPU_LOGICAL_CORES_FIELD_NUMBER: _ClassVar[int]
    RAM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAM_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    DESIRED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    CPU_FLAGS_FIELD_NUMBER: _ClassVar[int]
    NVML_FIELD_NUMBER: _ClassVar[int]
    CORDONED_FIELD_NUMBER: _ClassVar[int]
    CPU_USABLE_FIELD_NUMBER: _ClassVar[int]
    CPU_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_HOST_FIELD_NUMBER: _ClassVar[int]
    UNSCHEDULABLE_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    hostname: str
    connected: bool
    cpu_model: str
    cpu_logical_cores: int
    ram_total_bytes: int
    ram_free_bytes: int
    devices: _containers.RepeatedScalarFieldContainer[str]
    desired_generation: int
    applied_generation: int
    replicas: int
    agent_version: str
    last_seen_unix: int
    cpu_flags: _containers.RepeatedScalarFieldContainer[str]
    nvml: str
    cordoned: bool
    cpu_usable: int
    cpu_summary: str
    threads: int
    labels: _containers.ScalarMap[str, str]
    advertise_host: str
    unschedulable: bool
    draining: str
    deleted: bool
    def __init__(self, node_id: _Optional[str] = ..., hostname: _Optional[str] = ..., connected: _Optional[bool] = ..., cpu_model: _Optional[str] = ..., cpu_logical_cores: _Optional[int] = ..., ram_total_bytes: _Optional[int] = ..., ram_free_bytes: _Optional[int] = ..., devices: _Optional[_Iterable[str]] = ..., desired_generation: _Optional[int] = ..., applied_generation: _Optional[int] = ..., replicas: _Optional[int] = ..., agent_version: _Optional[str] = ..., last_seen_unix: _Optional[int] = ..., cpu_flags: _Optional[_Iterable[str]] = ..., nvml: _Optional[str] = ..., cordoned: _Optional[bool] = ..., cpu_usable: _Optional[int] = ..., cpu_summary: _Optional[str] = ..., threads: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., advertise_host: _Optional[str] = ..., unschedulable: _Optional[bool] = ..., draining: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "source", "desired_replicas", "ready_replicas", "conditions", "replicas", "recommendation", "scaling")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_FIELD_NUMBER: _ClassVar[int]
    SCALING_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    desired_replicas: int
    ready_replicas: int
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaView]
    recommendation: Recommendation
    scaling: Scaling
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., desired_replicas: _Optional[int] = ..., ready_replicas: _Optional[int] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaView, _Mapping]]] = ..., recommendation: _Optional[_Union[Recommendation, _Mapping]] = ..., scaling: _Optional[_Union[Scaling, _Mapping]] = ...) -> None: ...

class Scaling(_message.Message):
    __slots__ = ("replicas", "reason", "panic", "demand", "changed_unix", "last_request_unix")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PANIC_FIELD_NUMBER: _ClassVar[int]
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    CHANGED_UNIX_FIELD_NUMBER: _ClassVar[int]
    LAST_REQUEST_UNIX_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    reason: str
    panic: bool
    demand: float
    changed_unix: float
    last_request_unix: float
    def __init__(self, replicas: _Optional[int] = ..., reason: _Optional[str] = ..., panic: _Optional[bool] = ..., demand: _Optional[float] = ..., changed_unix: _Optional[float] = ..., last_request_unix: _Optional[float] = ...) -> None: ...

class Recommendation(_message.Message):
    __slots__ = ("node", "cpu_mode", "gpu_mode", "fits", "reason", "run_mode", "run_ngl", "error")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CPU_MODE_FIELD_NUMBER: _ClassVar[int]
    GPU_MODE_FIELD_NUMBER: _ClassVar[int]
    FITS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RUN_MODE_FIELD_NUMBER: _ClassVar[int]
    RUN_NGL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    node: str
    cpu_mode: FitMode
    gpu_mode: _containers.RepeatedCompositeFieldContainer[FitMode]
    fits: bool
    reason: str
    run_mode: str
    run_ngl: int
    error: str
    def __init__(self, node: _Optional[str] = ..., cpu_mode: _Optional[_Union[FitMode, _Mapping]] = ..., gpu_mode: _Optional[_Iterable[_Union[FitMode, _Mapping]]] = ..., fits: _Optional[bool] = ..., reason: _Optional[str] = ..., run_mode: _Optional[str] = ..., run_ngl: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class FitMode(_message.Message):
    __slots__ = ("name", "devices", "ram_bytes", "vram_bytes", "ngl", "context_length", "recommend_ngl", "max_context_length", "fits", "short")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    RAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    VRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    NGL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    RECOMMEND_NGL_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    FITS_FIELD_NUMBER: _ClassVar[int]
    SHORT_FIELD_NUMBER: _ClassVar[int]
    name: str
    devices: _containers.RepeatedScalarFieldContainer[str]
    ram_bytes: int
    vram_bytes: int
    ngl: int
    context_length: int
    recommend_ngl: int
    max_context_length: int
    fits: bool
    short: str
    def __init__(self, name: _Optional[str] = ..., devices: _Optional[_Iterable[str]] = ..., ram_bytes: _Optional[int] = ..., vram_bytes: _Optional[int] = ..., ngl: _Optional[int] = ..., context_length: _Optional[int] = ..., recommend_ngl: _Optional[int] = ..., max_context_length: _Optional[int] = ..., fits: _Optional[bool] = ..., short: _Optional[str] = ...) -> None: ...

class EvaluateFitRequest(_message.Message):
    __slots__ = ("model", "source", "node", "context_length", "parallel", "kv_type")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_FIELD_NUMBER: _ClassVar[int]
    KV_TYPE_FIELD_NUMBER: _ClassVar[int]
    model: str
    source: str
    node: str
    context_length: int
    parallel: int
    kv_type: str
    def __init__(self, model: _Optional[str] = ..., source: _Optional[str] = ..., node: _Optional[str] = ..., context_length: _Optional[int] = ..., parallel: _Optional[int] = ..., kv_type: _Optional[str] = ...) -> None: ...

class EvaluateFitResponse(_message.Message):
    __slots__ = ("nodes", "best_node")
    NODES_FIELD_NUMBER: _ClassVar[int]
    BEST_NODE_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeFit]
    best_node: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeFit, _Mapping]]] = ..., best_node: _Optional[str] = ...) -> None: ...

class NodeFit(_message.Message):
    __slots__ = ("recommendation", "devices", "ram_bytes", "vram_bytes", "page_cache_bytes")
    RECOMMENDATION_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    RAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    VRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAGE_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    recommendation: Recommendation
    devices: _containers.RepeatedCompositeFieldContainer[DeviceFit]
    ram_bytes: int
    vram_bytes: int
    page_cache_bytes: int
    def __init__(self, recommendation: _Optional[_Union[Recommendation, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[DeviceFit, _Mapping]]] = ..., ram_bytes: _Optional[int] = ..., vram_bytes: _Optional[int] = ..., page_cache_bytes: _Optional[int] = ...) -> None: ...

class DeviceFit(_message.Message):
    __slots__ = ("name", "kind", "weights_bytes", "kv_bytes", "compute_bytes", "output_bytes", "overhead_bytes", "total_bytes", "layers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    output_bytes: int
    overhead_bytes: int
    total_bytes: int
    layers: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., weights_bytes: _Optional[int] = ..., kv_bytes: _Optional[int] = ..., compute_bytes: _Optional[int] = ..., output_bytes: _Optional[int] = ..., overhead_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., layers: _Optional[str] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("type", "status", "reason", "message")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    type: str
    status: str
    reason: str
    message: str
    def __init__(self, type: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ReplicaView(_message.Message):
    __slots__ = ("replica_id", "node_id", "phase", "endpoint", "restarts", "message", "parts", "head_first_layer", "head_last_layer", "last_failure", "predicted_host_bytes", "replacements", "download_done_bytes", "download_total_bytes", "download_bytes_per_second", "threads")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIRST_LAYER_FIELD_NUMBER: _ClassVar[int]
    HEAD_LAST_LAYER_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_HOST_BYTES_FIELD_NUMBER: _ClassVar[int]
    REPLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_DONE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    node_id: str
    phase: str
    endpoint: str
    restarts: int
    message: str
    parts: _containers.RepeatedCompositeFieldContainer[WorkerPartView]
    head_first_layer: int
    head_last_layer: int
    last_failure: str
    predicted_host_bytes: int
    replacements: int
    download_done_bytes: int
    download_total_bytes: int
    download_bytes_per_second: float
    threads: int
    def __init__(self, replica_id: _Optional[str] = ..., node_id: _Optional[str] = ..., phase: _Optional[str] = ..., endpoint: _Optional[str] = ..., restarts: _Optional[int] = ..., message: _Optional[str] = ..., parts: _Optional[_Iterable[_Union[WorkerPartView, _Mapping]]] = ..., head_first_layer: _Optional[int] = ..., head_last_layer: _Optional[int] = ..., last_failure: _Optional[str] = ..., predicted_host_bytes: _Optional[int] = ..., replacements: _Optional[int] = ..., download_done_bytes: _Optional[int] = ..., download_total_bytes: _Optional[int] = ..., download_bytes_per_second: _Optional[float] = ..., threads: _Optional[int] = ...) -> None: ...

class WorkerPartView(_message.Message):
    __slots__ = ("worker_id", "node_id", "first_layer", "last_layer", "reserved_bytes", "phase", "endpoint", "message", "gpu")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_LAYER_FIELD_NUMBER: _ClassVar[int]
    LAST_LAYER_FIELD_NUMBER: _ClassVar[int]
    RESERVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    node_id: str
    first_layer: int
    last_layer: int
    reserved_bytes: int
    phase: str
    endpoint: str
    message: str
    gpu: bool
    def __init__(self, worker_id: _Optional[str] = ..., node_id: _Optional[str] = ..., first_layer: _Optional[int] = ..., last_layer: _Optional[int] = ..., reserved_bytes: _Optional[int] = ..., phase: _Optional[str] = ..., endpoint: _Optional[str] = ..., message: _Optional[str] = ..., gpu: _Optional[bool] = ...) -> None: ...

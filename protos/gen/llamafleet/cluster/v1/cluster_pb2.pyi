from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchRoutesRequest(_message.Message):
    __slots__ = ("gateway_id",)
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    gateway_id: str
    def __init__(self, gateway_id: _Optional[str] = ...) -> None: ...

class RoutingTable(_message.Message):
    __slots__ = ("version", "models")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    version: int
    models: _containers.RepeatedCompositeFieldContainer[ModelRoute]
    def __init__(self, version: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelRoute, _Mapping]]] = ...) -> None: ...

class ModelRoute(_message.Message):
    __slots__ = ("model", "parallel_slots", "context_length", "endpoints", "created_unix")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_SLOTS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    model: str
    parallel_slots: int
    context_length: int
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    created_unix: int
    def __init__(self, model: _Optional[str] = ..., parallel_slots: _Optional[int] = ..., context_length: _Optional[int] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., created_unix: _Optional[int] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("replica_id", "node_id", "url", "ready", "adapters")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    node_id: str
    url: str
    ready: bool
    adapters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, replica_id: _Optional[str] = ..., node_id: _Optional[str] = ..., url: _Optional[str] = ..., ready: _Optional[bool] = ..., adapters: _Optional[_Iterable[str]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "hostname", "connected", "cpu_model", "cpu_logical_cores", "ram_total_bytes", "ram_free_bytes", "devices", "desired_generation", "applied_generation", "replicas", "agent_version", "last_seen_unix")
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
    def __init__(self, node_id: _Optional[str] = ..., hostname: _Optional[str] = ..., connected: _Optional[bool] = ..., cpu_model: _Optional[str] = ..., cpu_logical_cores: _Optional[int] = ..., ram_total_bytes: _Optional[int] = ..., ram_free_bytes: _Optional[int] = ..., devices: _Optional[_Iterable[str]] = ..., desired_generation: _Optional[int] = ..., applied_generation: _Optional[int] = ..., replicas: _Optional[int] = ..., agent_version: _Optional[str] = ..., last_seen_unix: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "source", "desired_replicas", "ready_replicas", "conditions", "replicas")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    desired_replicas: int
    ready_replicas: int
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaView]
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., desired_replicas: _Optional[int] = ..., ready_replicas: _Optional[int] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaView, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("replica_id", "node_id", "phase", "endpoint", "restarts", "message")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    node_id: str
    phase: str
    endpoint: str
    restarts: int
    message: str
    def __init__(self, replica_id: _Optional[str] = ..., node_id: _Optional[str] = ..., phase: _Optional[str] = ..., endpoint: _Optional[str] = ..., restarts: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

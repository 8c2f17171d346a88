"""The control plane's domain types: model specs, nodes, replicas, routes. No protobuf, no I/O."""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from llamafleet.contract.replica import DEFAULT_CACHE_RAM_MIB, Pooling, ReplicaSpec, Role, Speculative
from llamafleet.core.chat_templates import template_error
from llamafleet.core.request_defaults import RequestDefaults
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import Gpu, Recommendation
from llamafleet.units.durations import DURATION_PATTERN, seconds


def _duration(default: str, description: str) -> str:
    return Field(default=default, pattern=DURATION_PATTERN, description=description)


class AutoscalingSpec(BaseModel):
    """How a model's replica count follows its load (docs/AUTOSCALING.md).

    Demand is every request a gateway holds for the model: in an engine (decoding or waiting for a
    slot) or queued in the gateway. Desired replicas = ceil(demand ÷ (parallelSlots × targetUtilization)),
    averaged over ``stableWindow``, or over ``panicWindow`` when a burst doubles what the replicas can
    take; scaled down only after ``scaleDownDelay`` of lower demand; to zero only after ``idleTimeout``
    without a request (minReplicas 0).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    mode: Literal["Internal", "External"] = Field(
        default="Internal",
        description="Internal: the control plane sets the replica count; External: an HPA or KEDA owns "
        "spec.replicas (the scale subresource) and llamafleet only exports the demand metric",
    )
    min_replicas: int = Field(
        default=0, ge=0, le=1000, description="Never fewer (0: scale to zero when idle)"
    )
    max_replicas: int = Field(ge=1, le=1000, description="Never more")
    target_utilization: float = Field(
        default=0.8, gt=0.0, le=1.0, description="Share of each replica's slots to fill before adding one"
    )
    stable_window: str = _duration("60s", "Demand is averaged over this window")
    panic_window: str = _duration("6s", "The short window that reacts to bursts (no scale-down in panic)")
    scale_down_delay: str = _duration("2m", "Demand must stay lower this long before replicas go")
    idle_timeout: str = _duration(
        "15m", "With minReplicas 0: no inference request for this long scales the model to zero"
    )
    cold_start_timeout: str = _duration(
        "3m",
        "How long a request waits for a first replica (from zero, or while all start) before a 503; "
        "at least 1.5x the model's measured cold start",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(AUTOSCALING_MIN_ABOVE_MAX)
        if self.panic_s > self.stable_s:
            raise ValueError("autoscaling panicWindow must not be longer than stableWindow")
        if min(self.stable_s, self.panic_s, self.idle_s) <= 0:
            raise ValueError("autoscaling stableWindow, panicWindow and idleTimeout must be longer than 0")
        return self

    @property
    def stable_s(self) -> float:
        return seconds(self.stable_window)

    @property
    def panic_s(self) -> float:
        return seconds(self.panic_window)

    @property
    def scale_down_s(self) -> float:
        return seconds(self.scale_down_delay)

    @property
    def idle_s(self) -> float:
        return seconds(self.idle_timeout)

    @property
    def cold_start_s(self) -> float:
        return seconds(self.cold_start_timeout)


AUTOSCALING_MIN_ABOVE_MAX = "autoscaling minReplicas must not be above maxReplicas"


class DraftModelRef(BaseModel):
    """The draft model of ``speculative: draft``: a smaller GGUF of the model's vocabulary."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    source: str = Field(min_length=1, description="As the model's source: builtin:, a path, http(s), hf://")
    sha256: str = Field(
        default="", pattern=r"^([0-9a-f]{64})?$", description="The file's sha256, checked before it loads"
    )


class ModelSpec(BaseModel):
    """One desired model, as written in a models file or a `Model` custom resource's spec (camelCase)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$", description="Name clients use")
    source: str = Field(
        min_length=1,
        description="builtin:NAME, an absolute path or file://PATH, an http(s) URL, or "
        "hf://ORG/REPO[:QUANT|/FILE.gguf][@REVISION]",
    )
    sha256: str = Field(
        default="", pattern=r"^([0-9a-f]{64})?$", description="The file's sha256, checked before it loads"
    )
    replicas: int = Field(default=1, ge=0, le=1000)
    context_length: int = Field(default=2048, ge=64, le=1_048_576, description="Tokens per slot")
    parallel_slots: int = Field(default=4, ge=1, le=256, description="Sequences batched together (slots)")
    gpu_layers: Annotated[int, Field(ge=-1)] | Literal["auto"] = Field(
        default="auto", description="'auto' (the most that fit) or a layer count (-1: all)"
    )
    threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="CPU threads per replica (0: the node's usable CPUs, shared evenly among the replicas "
        "it runs); more than any node has is refused at placement",
    )
    share_cpus: bool = Field(
        default=False,
        description="Place replicas on nodes whose CPUs other replicas already hold (their threads then "
        "compete for cores); by default a node whose CPUs are all held takes no more replicas",
    )
    embeddings: bool = Field(default=False, description="Serve /v1/embeddings from this model")
    pooling: Pooling = Field(
        default="auto",
        description="How embeddings pool tokens (auto: the GGUF's, else mean); rank: a reranker, served "
        "on /v1/rerank (a reranker GGUF says so itself)",
    )
    speculative: Speculative = Field(
        default="off",
        description="Speculative decoding: ngram drafts each answer's next tokens from its own context "
        "(prompt lookup); draft has draftModel (a smaller GGUF of the same vocabulary) guess them. Drafts "
        "are verified in the batched step, as far as that pays on the hardware (measured when the engine "
        "starts), and the output is the same as without; answers that quote their input (code edits, "
        'extraction, summaries) gain most from ngram. A request opts out with "speculative": false',
    )
    draft_model: DraftModelRef | None = Field(
        default=None,
        description="With speculative: draft, the model that drafts: fetched to each node like source",
    )
    cache_ram: int = Field(
        default=DEFAULT_CACHE_RAM_MIB,
        ge=0,
        le=1 << 20,
        description="MiB of host memory each replica keeps for prompt states saved from its slots, restored "
        "when a prompt continues one (a conversation's next turn after other conversations took its slot): "
        "llama-server's --cache-ram. Placement counts all of it in the replica's host memory (0: none kept)",
    )
    adapters: tuple[AdapterRef, ...] = Field(default=(), description="LoRA adapters loaded at start")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Only nodes with all these labels"
    )
    placement: Literal["spread", "binpack"] = Field(
        default="spread", description="spread: replicas on the emptiest nodes; binpack: fill nodes up first"
    )
    allow_split: bool = Field(
        default=False, description="When no single node fits, serve it split over nodes (llama.cpp RPC)"
    )
    balancer: Literal["least-load", "prefix-affinity", "session", "round-robin"] | None = Field(
        default=None,
        description="How gateways pick a replica per request (default: the gateway's --balancer)",
    )
    request_defaults: RequestDefaults = Field(
        default_factory=RequestDefaults,
        description="Sampling settings and max_tokens applied when a request sets none (the request "
        "wins; these come before the GGUF's own general.sampling.* keys)",
    )
    chat_template: str = Field(
        default="",
        max_length=65536,
        description="A Jinja chat template used instead of the GGUF's own (one that renders tools, or "
        "for a GGUF without one); empty: the GGUF's, else ChatML",
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description="Follow the load between minReplicas and maxReplicas (replicas is then only the "
        "starting count, or what an HPA/KEDA sets in External mode); absent: always `replicas`",
    )
    prefetch: bool = Field(
        default=False,
        description="Fetch the file onto every node its nodeSelector admits, before (or without) placing "
        "replicas there, so scaling out does not wait for a download",
    )

    @field_validator("chat_template")
    @classmethod
    def _parses_as_jinja(cls, text: str) -> str:
        error = template_error(text) if text else ""
        if error:
            raise ValueError(error)
        return text

    # The same rules are CEL `x-kubernetes-validations` in the CRD (controlplane/operator/crd.py),
    # so the API server rejects what a models file would.
    @model_validator(mode="after")
    def _cross_field_rules(self) -> ModelSpec:
        if self.allow_split and self.gpu_layers not in ("auto", -1):
            raise ValueError(SPLIT_NEEDS_ALL_LAYERS)
        names = [a.name for a in self.adapters]
        if len(names) != len(set(names)):
            raise ValueError("adapter names must be unique")
        if (self.speculative == "draft") != (self.draft_model is not None):
            raise ValueError(DRAFT_MODEL_WITH_DRAFT)
        return self


# What an engine is started with (or where it may run): changing any of these replaces replicas,
# one by one (controlplane/rollout.py); the other fields (replicas, placement, balancer) apply in place.
ENGINE_FIELDS = (
    "source", "sha256", "context_length", "parallel_slots", "gpu_layers", "threads", "embeddings",
    "adapters", "node_selector", "allow_split", "request_defaults", "chat_template", "pooling",
    "speculative", "draft_model", "cache_ram",
)  # fmt: skip


def needs_new_replicas(running: ModelSpec, desired: ModelSpec) -> bool:
    """Whether replicas started from ``running`` must be replaced to serve ``desired``."""
    return any(getattr(running, name) != getattr(desired, name) for name in ENGINE_FIELDS)


DRAFT_MODEL_WITH_DRAFT = "speculative: draft needs a draftModel, and a draftModel needs speculative: draft"
SPLIT_NEEDS_ALL_LAYERS = (
    "allowSplit needs gpuLayers 'auto' or -1: a split places every layer on some node's devices"
)


class AdapterRef(BaseModel):
    """A LoRA adapter GGUF present on the nodes; clients select it as ``<model>:<name>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    path: str = Field(min_length=1, description="Absolute path of the adapter GGUF on the node")
    scale: float = 1.0


@dataclass
class NodeRecord:
    node_id: str
    hostname: str = ""
    advertise_host: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    cpu_model: str = ""
    cpu_logical_cores: int = 0
    cpu_usable: int = 0  # CPUs its engines share, threads in all (0: unknown, not counted)
    cpu_summary: str = ""  # for people: cores, affinity, cgroup quota
    ram_total_bytes: int = 0
    ram_free_bytes: int = 0
    devices: list[str] = field(default_factory=list)
    agent_version: str = ""
    connected: bool = False
    session: int = 0
    last_seen: float = 0.0
    disconnected_at: float | None = None
    desired_generation: int = 0
    applied_generation: int = 0
    cached_models: dict[str, CachedModelInfo] = field(default_factory=dict)  # by source
    cpu_flags: tuple[str, ...] = ()  # CPU features the node's llama.cpp build uses
    gpus: tuple[Gpu, ...] = ()  # GPUs (and their free memory) as llama.cpp sees them
    nvml: str = ""  # the NVIDIA driver's view of its GPUs, for people
    watched_version: int = (
        0  # the desired-sources list its cached_models answer (ClusterState.sources_version)
    )
    models_reported: bool = False  # its cached_models answer the current list: a source it lacks, it lacks
    running: dict[str, ReplicaReport] = field(default_factory=dict)  # every replica it reports, by id
    cordoned: bool = False  # drained on request: nothing new is placed here, its replicas move away
    unschedulable: bool = False  # its Kubernetes Node is cordoned: nothing new is placed here
    draining: str = ""  # its Kubernetes Node carries a drain taint (this one): its replicas move away
    deleted: bool = False  # its Kubernetes Node is gone: its replicas are placed again at once

    @property
    def moving_away(self) -> bool:
        """Its replicas move elsewhere through the rolling path (new ones ready before old ones stop)."""
        return self.cordoned or bool(self.draining) or self.deleted

    @property
    def closed(self) -> bool:
        """Nothing new is placed here."""
        return self.moving_away or self.unschedulable

    threads: int = 0  # threads its replicas compute with now, in all (from its reports)


@dataclass(frozen=True)
class CachedModelInfo:
    """A model file an agent holds: its size, and its memory profile or why the header is unreadable."""

    size_bytes: int
    profile: ModelProfile | None = None
    error: str = ""


class ReplicaPhase(enum.Enum):
    PENDING = "pending"  # not placed yet
    ASSIGNED = "assigned"  # placed; the agent has not reported it yet
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPING = "stopping"


@dataclass
class ReplicaRecord:
    replica_id: str
    model: str
    spec: ModelSpec
    node_id: str | None = None
    phase: ReplicaPhase = ReplicaPhase.PENDING
    endpoint: str = ""
    restarts: int = 0
    error: str = ""  # machine-readable, e.g. "model_invalid"
    message: str = ""
    adapters: tuple[str, ...] = ()  # loaded in the engine now
    engine_secret: str = field(default="", repr=False)  # what the engine requires; gateways get it
    download: tuple[int, int, float] = (0, 0, 0.0)  # its model file downloading: done, total, bytes/s
    n_gpu_layers: int = -1  # chosen at placement (the spec's count, or the fit for "auto")
    failed_on: tuple[str, ...] = ()  # nodes where its engine failed for good: placed elsewhere first
    retry_at: float = 0.0  # monotonic time before which it is not placed again on a node in failed_on
    reserved_host_bytes: int = 0  # host memory the scheduler expects it to take where it was placed
    adopted: bool = False  # found running by this control plane (after a restart or failover), not placed
    # A split replica: RPC workers on other nodes hold these layer ranges (in layer order); the head
    # (``node_id``) holds ``head_layers`` and the output. Empty: the whole model on ``node_id``.
    parts: list[WorkerPart] = field(default_factory=list)
    head_layers: tuple[int, int] | None = None
    last_failure: str = ""  # why its last split was taken down and placed again, for the model's status
    replacements: int = 0  # times its split was taken down whole and placed again
    created_at: float = field(default_factory=time.monotonic)  # for its cold start (created → ready)
    served: bool = False  # has been ready at least once
    threads: int = 0  # CPU threads its engine computes with now, as its agent reports (0: not started)


@dataclass
class WorkerPart:
    """One RPC worker of a split replica: a layer range on another node, leased to the replica's head."""

    worker_id: str
    node_id: str
    first_layer: int
    last_layer: int
    reserved_bytes: int  # weights, KV and compute of the range (held back until the split is ready)
    phase: ReplicaPhase = ReplicaPhase.ASSIGNED
    endpoint: str = ""  # the worker's gate, host:port
    message: str = ""
    gpu: bool = False  # its range fits the node's first GPU: the worker serves that, else its CPU


@dataclass(frozen=True)
class ReplicaReport:
    """What an agent says about one replica in its Status."""

    replica_id: str
    model: str
    phase: ReplicaPhase
    endpoint: str
    restarts: int
    error: str
    message: str
    adapters: tuple[str, ...] = ()
    spec: ReplicaSpec | None = None  # what it runs; None from agents that predate adoption
    engine_secret: str = field(default="", repr=False)
    download: tuple[int, int, float] = (0, 0, 0.0)  # its model file downloading: done, total, bytes/s
    threads: int = 0  # CPU threads its process computes with now


@dataclass(frozen=True)
class NodeHello:
    node_id: str
    hostname: str
    advertise_host: str
    labels: dict[str, str]
    cpu_model: str
    cpu_logical_cores: int
    ram_total_bytes: int
    ram_free_bytes: int
    devices: list[str]
    agent_version: str
    replicas: list[ReplicaReport]
    cached_models: dict[str, CachedModelInfo]
    cpu_flags: tuple[str, ...] = ()
    gpus: tuple[Gpu, ...] = ()
    nvml: str = ""
    cpu_usable: int = 0
    cpu_summary: str = ""


@dataclass(frozen=True)
class NodeStatus:
    applied_generation: int
    ram_free_bytes: int
    replicas: list[ReplicaReport]
    cached_models: dict[str, CachedModelInfo]
    device_free: dict[str, int] = field(default_factory=dict)  # GPU name → free bytes
    watched_version: int = 0


def serves(running: ReplicaSpec, spec: ModelSpec) -> bool:
    """Whether a replica running ``running`` (as its agent reports it) serves ``spec`` as it is
    (adoption). Splits are not adopted: a new leader places them again (their workers and head are
    started together)."""
    if running.role != Role.ENGINE or running.remote_parts:
        return False
    layers_ok = spec.gpu_layers == "auto" or spec.gpu_layers == running.n_gpu_layers
    draft = spec.draft_model
    mine = [(a.name, a.path) for a in running.adapters]
    theirs = [(a.name, a.path) for a in spec.adapters]
    scales_ok = all(  # scales travel as float32
        math.isclose(a.scale, b.scale, rel_tol=1e-6)
        for a, b in zip(running.adapters, spec.adapters, strict=False)
    )
    return (
        layers_ok and mine == theirs and scales_ok
        and (running.model, running.source, running.sha256, running.context_length, running.parallel_slots,
             running.n_threads, running.embeddings, running.request_defaults, running.chat_template,
             running.pooling, running.speculative or "off", running.draft_source, running.draft_sha256,
             running.cache_ram)
        == (spec.name, spec.source, spec.sha256, spec.context_length, spec.parallel_slots,
            spec.threads, spec.embeddings, spec.request_defaults.as_json(), spec.chat_template,
            spec.pooling, spec.speculative, draft.source if draft else "", draft.sha256 if draft else "",
            spec.cache_ram)
    )  # fmt: skip


@dataclass(frozen=True)
class Condition:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""


@dataclass(frozen=True)
class ModelStatusView:
    name: str
    source: str
    desired_replicas: int
    ready_replicas: int
    conditions: tuple[Condition, ...]
    replicas: tuple[ReplicaRecord, ...]
    recommendation: Recommendation | None = None  # memory fit where it runs, or on the best node
    fit_error: str = ""  # why there is no recommendation, or why it fits nowhere
    scaling: ScaleStatus | None = None  # an autoscaled model: its count and why


@dataclass
class ScaleStatus:
    """An autoscaled model's replica count and why (controlplane/autoscaler/loop.py writes it)."""

    replicas: int
    reason: str
    panic: bool = False
    demand: float = 0.0
    changed_unix: float = 0.0  # when the count last changed
    last_request_unix: float = 0.0  # the last inference request any gateway saw


@dataclass(frozen=True)
class Endpoint:
    replica_id: str
    node_id: str
    url: str
    ready: bool
    adapters: tuple[str, ...] = ()
    secret: str = field(default="", repr=False)  # sent to the engine (Authorization: Bearer)


@dataclass(frozen=True)
class ModelRoute:
    model: str
    parallel_slots: int
    context_length: int
    endpoints: tuple[Endpoint, ...]
    created: int = 0
    recommendation: Recommendation | None = None
    fit_error: str = ""
    balancer: str = ""  # the model's policy; "": the gateway's default
    # Capacity on its way: replicas the model should have now (starting ones included), and whether a
    # request finding no ready replica waits for one (up to ``hold_s``) instead of a 503 at once:
    # replicas are starting, or the model scales from zero.
    target_replicas: int = 0
    holds: bool = False
    hold_s: float = 0.0
    adapters: tuple[
        str, ...
    ] = ()  # LoRA adapters its spec loads at start: names resolve before a replica runs


@dataclass(frozen=True)
class RoutingTable:
    version: int = 0
    models: dict[str, ModelRoute] = field(default_factory=dict)
    settling: bool = False  # a control plane just started: endpoints may still be missing

    def ready_endpoints(self, model: str, adapter: str | None = None) -> list[Endpoint]:
        route = self.models.get(model)
        if route is None:
            return []
        return [e for e in route.endpoints if e.ready and (adapter is None or adapter in e.adapters)]

    def resolve(self, name: str) -> tuple[str, str | None] | None:
        """A client's model name → (model, adapter or None); None when nothing serves it."""
        if name in self.models:
            return name, None
        base, sep, adapter = name.rpartition(":")
        route = self.models.get(base)
        if (
            sep
            and route is not None
            and (adapter in route.adapters or any(adapter in e.adapters for e in route.endpoints))
        ):
            return base, adapter
        return None

"""The `Model` custom resource: its names, how an object becomes a ModelSpec, and its status shape.

No Kubernetes client here: the CRD generator (crd.py) and the tests read these without a cluster.

Naming: the id clients put in ``"model"`` is the object's ``metadata.name``; the namespace is not
part of it (an OpenAI client knows one flat list of models). Two Models with the same name in
different watched namespaces collide: the older one (creationTimestamp, then namespace) keeps
serving, the newer one gets ``ModelValid=False, reason=NameConflict`` naming the holder, and
both get a Warning Event. Nothing switches silently.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from controlplane.domain import ModelSpec

GROUP = "llamafleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Model"
PLURAL = "models"
SINGULAR = "model"
SHORT_NAMES = ("lfm",)
CRD_NAME = f"{PLURAL}.{GROUP}"
FINALIZER = f"{GROUP}/drain"  # replicas are drained and stopped before the object goes
MODEL_LABEL = f"{GROUP}/model"  # the scale subresource's selector


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ConditionStatus(_Camel):
    """A condition in Kubernetes' own shape (metav1.Condition)."""

    type: str = Field(description="Ready, Placed, ModelValid, Progressing or Degraded")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(description="CamelCase, machine-readable")
    message: str = Field(default="", description="For people: what happened and what to do")
    last_transition_time: str = Field(description="RFC 3339; changes only when status changes")
    observed_generation: int = Field(default=0, ge=0)


class DownloadStatus(_Camel):
    """A model file on its way to a node's cache."""

    bytes: int = Field(ge=0, description="Bytes on the node so far")
    total_bytes: int = Field(default=0, ge=0, description="The file's size (0: not known yet)")
    bytes_per_second: int = Field(default=0, ge=0, description="Rate over the last second or so")


class ReplicaPlacement(_Camel):
    """Where one replica runs and what it was given."""

    name: str = Field(description="Replica id (also in the gateway's x-llamafleet-replica header)")
    node: str = Field(default="", description="Node it is placed on ('' while pending)")
    phase: str = Field(description="pending, assigned, starting, ready, restarting, failed, stopping")
    gpu_layers: int = Field(default=0, description="Layers offloaded to GPUs on that node")
    threads: int = Field(
        default=0, ge=0, description="CPU threads its engine computes with (its share of the node's CPUs)"
    )
    predicted_host_bytes: int = Field(default=0, ge=0, description="Host memory the scheduler reserved")
    restarts: int = Field(default=0, ge=0)
    replacements: int = Field(default=0, ge=0, description="Times its layer split was placed again")
    message: str = Field(default="", description="Why it is not ready, when it is not")
    download: DownloadStatus | None = Field(
        default=None, description="Its model file downloading to the node"
    )
    layout: list[SplitPartStatus] = Field(
        default_factory=list,
        description="A layer split: which layers each node holds (RPC workers, then the head); empty: whole",
    )


class SplitPartStatus(_Camel):
    """One part of a split replica."""

    node: str
    role: Literal["head", "rpc-worker"]
    first_layer: int = Field(ge=0)
    last_layer: int = Field(ge=0, description="Inclusive; the head also holds the output layer")
    predicted_host_bytes: int = Field(default=0, ge=0, description="Weights, KV and compute of the part")
    phase: str = Field(default="", description="The RPC worker's phase (the head's is the replica's)")
    endpoint: str = Field(default="", description="The RPC worker's gate, host:port")


class AutoscalingStatus(_Camel):
    """The autoscaler's last decision (a new leader carries on from it)."""

    desired_replicas: int = Field(ge=0, description="The replica count the autoscaler set")
    reason: str = Field(default="", description="Why, with the figures, at the last change")
    last_scale_time: str = Field(default="", description="RFC 3339: when the count last changed")


class ModelResourceStatus(_Camel):
    """What `kubectl get/describe model` shows; written by the leader's operator only."""

    observed_generation: int = Field(default=0, ge=0, description="metadata.generation this status reflects")
    model_id: str = Field(default="", description='The id clients put in "model"')
    replicas: int = Field(default=0, ge=0, description="Replicas that exist (placed or pending)")
    ready_replicas: int = Field(default=0, ge=0)
    selector: str = Field(default="", description="Label selector for the scale subresource (HPA, KEDA)")
    nodes: str = Field(default="", description="Nodes it runs on, comma-separated")
    gpu_layers: str = Field(default="", description="GPU layers per replica, comma-separated")
    conditions: list[ConditionStatus] = Field(default_factory=list)
    replica_statuses: list[ReplicaPlacement] = Field(default_factory=list)
    recommendation: dict[str, Any] | None = Field(
        default=None, description="Memory fit where it runs (or on the best node): RAM/VRAM, layers, context"
    )
    autoscaling: AutoscalingStatus | None = Field(default=None, description="Set when spec.autoscaling is")


def spec_fields() -> dict[str, Any]:
    """The JSON schema of ModelSpec as the CRD's spec: every field except ``name`` (metadata.name)."""
    schema = ModelSpec.model_json_schema(by_alias=True)
    schema["properties"].pop("name")
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    return schema


def model_spec(obj: dict[str, Any]) -> ModelSpec:
    """A Model object → the same ModelSpec a models file would give. Raises ValidationError."""
    spec = dict(obj.get("spec") or {})
    spec["name"] = obj["metadata"]["name"]
    return ModelSpec.model_validate(spec)


def validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "spec"
    return f"spec.{where}: {first['msg']}"

"""The placement seam: a Placer picks a node (and GPU layers) for a replica or says, per node, why not.

The implementation is ``controlplane.scheduler.framework.Scheduler`` (filters → scorers → pick);
the memory helpers here are shared by its plugins and by the reservation of memory for replicas
that are placed but not yet running.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from controlplane.domain import ModelSpec, NodeRecord, ReplicaRecord
from controlplane.scheduler.fit import Shape, context_params
from controlplane.scheduler.split import SplitPlan
from llamafleet.fit.profile import ModelProfile

MiB = 1 << 20
# Without a header: engine runtime, KV cache and compute buffers on top of the weights.
RUNTIME_OVERHEAD_BYTES = 256 * MiB


@dataclass(frozen=True)
class Placed:
    node_id: str
    n_gpu_layers: int = 0
    score: float = 0.0
    host_bytes: int = 0  # the host memory it will take there, held back until it runs


@dataclass(frozen=True)
class Unplaceable:
    reasons: dict[str, str]  # node id → why it cannot host the replica
    split_plan: SplitPlan | None = None  # when the model may be split and a split would fit


class Placer(Protocol):
    def place(
        self, spec: ModelSpec, nodes: Iterable[NodeRecord], replicas: Iterable[ReplicaRecord]
    ) -> Placed | Unplaceable: ...

    def place_many(
        self, specs: list[ModelSpec], nodes: Iterable[NodeRecord], replicas: Iterable[ReplicaRecord]
    ) -> list[Placed | Unplaceable]:
        """One replica of each spec, in order, each placement's memory counting for the next."""


def host_bytes_needed(
    spec: ModelSpec, node: NodeRecord, profile: ModelProfile | None, n_gpu_layers: int
) -> int:
    """Host memory a replica of ``spec`` takes on ``node`` with this many GPU layers."""
    if profile is None:
        info = node.cached_models.get(spec.source)
        return (info.size_bytes if info else 0) + RUNTIME_OVERHEAD_BYTES
    shape = Shape.of(node)  # the same curves the fits-memory filter placed it with
    return int(shape.curves(profile, context_params(spec)).host[shape.layers(profile, n_gpu_layers)])

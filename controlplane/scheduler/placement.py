"""The placement seam: a Placer picks a node for a replica or says, per node, why not.

``FirstFitPlacer`` is the foundation's placer: the first connected node (by name) whose free
RAM covers the model's estimated need. The plugin scheduler (filters → scorers → picker) and
the GGUF-based memory estimator replace it behind the same ``Placer`` protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from controlplane.domain import ModelSpec, NodeRecord, ReplicaPhase, ReplicaRecord

MiB = 1 << 20
# Until the fit estimator lands: engine runtime, KV cache and compute buffers on top of the weights.
RUNTIME_OVERHEAD_BYTES = 256 * MiB


@dataclass(frozen=True)
class Placed:
    node_id: str


@dataclass(frozen=True)
class Unplaceable:
    reasons: dict[str, str]  # node id → why it cannot host the replica


class Placer(Protocol):
    def place(
        self, spec: ModelSpec, nodes: Iterable[NodeRecord], replicas: Iterable[ReplicaRecord]
    ) -> Placed | Unplaceable: ...


def estimated_bytes(spec: ModelSpec, node: NodeRecord) -> int:
    """Weights as the node reports the file size, plus a flat runtime allowance."""
    return node.cached_models.get(spec.source, 0) + RUNTIME_OVERHEAD_BYTES


def reserved_bytes(
    node: NodeRecord, replicas: Iterable[ReplicaRecord], specs: Mapping[str, ModelSpec]
) -> int:
    """Memory promised to replicas placed here but not yet running (so not in the node's free RAM)."""
    return sum(
        estimated_bytes(r.spec, node)
        for r in replicas
        if r.node_id == node.node_id and r.phase == ReplicaPhase.ASSIGNED
    )


class FirstFitPlacer:
    def place(
        self, spec: ModelSpec, nodes: Iterable[NodeRecord], replicas: Iterable[ReplicaRecord]
    ) -> Placed | Unplaceable:
        replicas = list(replicas)
        reasons: dict[str, str] = {}
        for node in sorted(nodes, key=lambda n: n.node_id):
            if not node.connected:
                reasons[node.node_id] = "not connected"
                continue
            need = estimated_bytes(spec, node)
            free = node.ram_free_bytes - reserved_bytes(node, replicas, {})
            if free < need:
                reasons[node.node_id] = f"needs {need / MiB:.0f} MiB RAM, {max(free, 0) / MiB:.0f} MiB free"
                continue
            return Placed(node.node_id)
        return Unplaceable(reasons)

"""The placement seam: a Placer picks a node (and GPU layers) for a replica or says, per node, why not.

``FitPlacer`` asks the memory model (llamafleet.fit, through scheduler.fit) whether the replica
fits each connected node, in node-name order, first fit wins: with ``gpuLayers: auto`` it takes
the most GPU layers that fit (partial offload before CPU), with a fixed count it checks exactly
that. Memory promised to replicas placed but not yet running is held back. A model whose header
no node has reported yet (a path not resolved anywhere) falls back to its file size plus a flat
allowance. The plugin scheduler (filters → scorers → picker) replaces the node choice behind the
same ``Placer`` protocol.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from controlplane.domain import ModelSpec, NodeRecord, ReplicaPhase, ReplicaRecord
from controlplane.scheduler.fit import context_params, fixed_layers_shortfall, node_resources, profile_for
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import recommend

MiB = 1 << 20
# Without a header: engine runtime, KV cache and compute buffers on top of the weights.
RUNTIME_OVERHEAD_BYTES = 256 * MiB


@dataclass(frozen=True)
class Placed:
    node_id: str
    n_gpu_layers: int = 0


@dataclass(frozen=True)
class Unplaceable:
    reasons: dict[str, str]  # node id → why it cannot host the replica


class Placer(Protocol):
    def place(
        self, spec: ModelSpec, nodes: Iterable[NodeRecord], replicas: Iterable[ReplicaRecord]
    ) -> Placed | Unplaceable: ...


def host_bytes_needed(
    spec: ModelSpec, node: NodeRecord, profile: ModelProfile | None, n_gpu_layers: int
) -> int:
    """Host memory a replica of ``spec`` takes on ``node`` with this many GPU layers."""
    if profile is None:
        info = node.cached_models.get(spec.source)
        return (info.size_bytes if info else 0) + RUNTIME_OVERHEAD_BYTES
    est, _ = fixed_layers_shortfall(profile, context_params(spec), node_resources(node), n_gpu_layers)
    return est.host_bytes


def reserved_bytes(node: NodeRecord, replicas: Iterable[ReplicaRecord], nodes: list[NodeRecord]) -> int:
    """Memory promised to replicas placed here but not yet running (so not in the node's free RAM)."""
    return sum(
        host_bytes_needed(r.spec, node, profile_for(r.spec.source, nodes)[0], r.n_gpu_layers)
        for r in replicas
        if r.node_id == node.node_id and r.phase == ReplicaPhase.ASSIGNED
    )


class FitPlacer:
    def place(
        self, spec: ModelSpec, nodes: Iterable[NodeRecord], replicas: Iterable[ReplicaRecord]
    ) -> Placed | Unplaceable:
        nodes = sorted(nodes, key=lambda n: n.node_id)
        replicas = list(replicas)
        profile, error = profile_for(spec.source, nodes)
        if profile is None and not error:
            waiting = [n.node_id for n in nodes if n.connected and not n.models_reported]
            if waiting:  # they have been asked whether they hold the file; wait for the answer
                return Unplaceable(
                    {n: "has not yet reported whether it holds the model file" for n in waiting}
                )
        params = context_params(spec)
        reasons: dict[str, str] = {}
        for node in nodes:
            if not node.connected:
                reasons[node.node_id] = "not connected"
                continue
            offer = node_resources(node, reserved_bytes(node, replicas, nodes))
            if profile is None:
                need = host_bytes_needed(spec, node, None, 0)
                if offer.ram_free_bytes < need:
                    reasons[node.node_id] = (
                        f"needs {need / MiB:.0f} MiB RAM, {offer.ram_free_bytes / MiB:.0f} MiB free"
                    )
                    continue
                return Placed(node.node_id, 0)
            if spec.gpu_layers == "auto":
                rec = recommend(profile, params, offer)
                # The engine splits its GPU layers over every GPU of the node: the all-GPUs mode.
                gpus = rec.gpu_mode[-1] if rec.gpu_mode else None
                if gpus is not None and gpus.fits:
                    return Placed(node.node_id, gpus.recommend_ngl)
                if rec.cpu_mode.fits:
                    return Placed(node.node_id, 0)
                reasons[node.node_id] = rec.reason().removeprefix(f"{node.node_id}: ")
                continue
            ngl = spec.gpu_layers if offer.gpus else 0  # without GPUs llama.cpp runs every layer on the CPU
            _, short = fixed_layers_shortfall(profile, params, offer, ngl)
            if short:
                reasons[node.node_id] = f"with {spec.gpu_layers} GPU layers {short}"
                continue
            return Placed(node.node_id, ngl)
        return Unplaceable(reasons)

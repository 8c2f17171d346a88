"""The memory model (llamafleet.fit) applied to the cluster's view: what a model spec needs on a node.

Profiles come from the agents (each reports the GGUF headers it holds), so the control plane
can evaluate a model on any node, including nodes that do not hold the file yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controlplane.domain import ModelSpec, NodeRecord
from llamafleet.contract.replica import DEFAULT_CACHE_RAM_MIB
from llamafleet.fit.components import ContextParams, repack_types
from llamafleet.fit.curves import OffloadCurves, offload_curves
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import Gpu, NodeResources, Recommendation, best_node, recommend

# The engine's defaults (nodeagent/engine options): n_batch = n_ubatch = 512, one KV stream per
# slot, flash attention left to llama.cpp's auto (on where supported).
ENGINE_BATCH = 512
DEFAULT_CONTEXT = 4096


def context_params(
    spec: ModelSpec | None, context_length: int = 0, parallel: int = 0, kv_type: str = ""
) -> ContextParams:
    """The context an engine for ``spec`` asks llama.cpp for, and its prompt cache (a Model's cacheRam;
    the default without a spec); explicit values override the spec."""
    cache_mib = spec.cache_ram if spec else DEFAULT_CACHE_RAM_MIB
    return ContextParams(
        n_ctx_per_seq=context_length or (spec.context_length if spec else DEFAULT_CONTEXT),
        n_seq=parallel or (spec.parallel_slots if spec else 1),
        n_batch=ENGINE_BATCH,
        n_ubatch=ENGINE_BATCH,
        type_k=kv_type or "f16",
        type_v=kv_type or "f16",
        embeddings=bool(spec and spec.embeddings),
        prompt_cache_bytes=cache_mib << 20,
    ).check()


def profile_for(source: str, nodes: Iterable[NodeRecord]) -> tuple[ModelProfile | None, str]:
    """A profile some node reported for ``source``, else the header error one reported ("" if none)."""
    error = ""
    for node in sorted(nodes, key=lambda n: n.node_id):
        info = node.cached_models.get(source)
        if info is None:
            continue
        if info.profile is not None:
            return info.profile, ""
        error = error or info.error
    return None, error


def node_resources(node: NodeRecord, reserved_bytes: int = 0) -> NodeResources:
    """What ``node`` offers now, less what replicas placed there but not yet running will take."""
    return NodeResources(
        node.node_id, max(node.ram_free_bytes - reserved_bytes, 0), node.gpus, node.cpu_flags
    )


@dataclass(frozen=True)
class Shape:
    """What a node's memory curves depend on: its GPUs (names, kinds, sizes) and its CPU's repacking."""

    gpus: tuple[Gpu, ...]  # free memory left out: it varies by node
    cpu_flags: tuple[str, ...]

    @classmethod
    def of(cls, node: NodeRecord) -> Shape:
        return cls(tuple(Gpu(g.name, 0, g.total_bytes, g.kind) for g in node.gpus), node.cpu_flags)

    def curves(self, profile: ModelProfile, params: ContextParams) -> OffloadCurves:
        shares = tuple(float(g.total_bytes or 1) for g in self.gpus)  # llama.cpp's split, by device size
        kinds = tuple(g.kind for g in self.gpus)
        return offload_curves(profile, params, shares, kinds, repack_types(self.cpu_flags))

    def layers(self, profile: ModelProfile, n_gpu_layers: int) -> int:
        """The index into the curves for this many GPU layers (-1: all; without GPUs: none)."""
        if not self.gpus:
            return 0
        top = profile.n_layer + 1
        return top if n_gpu_layers < 0 else min(n_gpu_layers, top)


def model_recommendation(
    spec: ModelSpec, nodes: list[NodeRecord], placed_on: str | None
) -> tuple[Recommendation | None, str]:
    """For the node a model runs on, else the best connected node; with an error when there is no estimate."""
    profile, error = profile_for(spec.source, nodes)
    if profile is None:
        return None, error or "no node has reported this model's file yet"
    params = context_params(spec)
    if placed_on is not None:
        node = next((n for n in nodes if n.node_id == placed_on), None)
        if node is not None:
            return recommend(profile, params, node_resources(node)), ""
    candidates = [node_resources(n) for n in nodes if n.connected]
    if not candidates:
        return None, "no node is connected"
    best, answers = best_node(profile, params, candidates)
    if best is not None:
        return best, ""
    return answers[0], "fits on no node: " + "; ".join(a.reason() for a in answers)

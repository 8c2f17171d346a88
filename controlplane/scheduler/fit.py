"""The memory model (llamafleet.fit) applied to the cluster's view: what a model spec needs on a node.

Profiles come from the agents (each reports the GGUF headers it holds), so the control plane
can evaluate a model on any node, including nodes that do not hold the file yet.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from controlplane.domain import ModelSpec, NodeRecord
from llamafleet.fit.components import ContextParams
from llamafleet.fit.estimate import Estimate, Offload, estimate
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import (
    NodeResources,
    Recommendation,
    best_node,
    offload_for,
    recommend,
    shortfall,
)

# The engine's defaults (nodeagent/engine options): n_batch = n_ubatch = 512, one KV stream per
# slot, flash attention left to llama.cpp's auto (on where supported).
ENGINE_BATCH = 512
DEFAULT_CONTEXT = 4096


def context_params(
    spec: ModelSpec | None, context_length: int = 0, parallel: int = 0, kv_type: str = ""
) -> ContextParams:
    """The context an engine for ``spec`` asks llama.cpp for; explicit values override the spec."""
    return ContextParams(
        n_ctx_per_seq=context_length or (spec.context_length if spec else DEFAULT_CONTEXT),
        n_seq=parallel or (spec.parallel_slots if spec else 1),
        n_batch=ENGINE_BATCH,
        n_ubatch=ENGINE_BATCH,
        type_k=kv_type or "f16",
        type_v=kv_type or "f16",
        embeddings=bool(spec and spec.embeddings),
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


def fixed_layers_shortfall(
    profile: ModelProfile, params: ContextParams, node: NodeResources, ngl: int
) -> tuple[Estimate, str]:
    """The estimate with ``ngl`` layers on all the node's GPUs, and why it does not fit ("" if it fits)."""
    gpus = node.gpus if ngl else ()
    est = cached_estimate(profile, params, offload_for(node, gpus, ngl))
    return est, shortfall(est, node, gpus)


@functools.lru_cache(maxsize=1 << 16)
def cached_estimate(profile: ModelProfile, params: ContextParams, offload: Offload) -> Estimate:
    """Estimates are pure: the scheduler asks the same ones for every node of a kind and every replica."""
    return estimate(profile, params, offload)


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

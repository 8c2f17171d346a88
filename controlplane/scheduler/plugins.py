"""The scheduler's plugins: filters keep or reject a node (with a reason), scorers rate it in [0, 1].

Filters: node-ready, node-selector, fits-memory (the memory model: picks the GPU layers, partial
offload before CPU). Scorers: binpack and spread (memory use after placement on the resource the
replica mostly uses), model-strategy (each model's own spread/binpack), cache-locality (the node
already holds the file), replica-spread (anti-affinity between replicas of one model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from controlplane.domain import ModelSpec, NodeRecord, ReplicaRecord
from controlplane.scheduler.fit import fixed_layers_shortfall
from llamafleet.fit.components import ContextParams
from llamafleet.fit.estimate import Estimate
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import NodeResources

MiB = 1 << 20
RUNTIME_OVERHEAD_BYTES = 256 * MiB  # without a header: on top of the file size


@dataclass(frozen=True)
class PlacementContext:
    """What every plugin may read about the replica being placed."""

    spec: ModelSpec
    profile: ModelProfile | None  # None: no node has reported a readable header
    params: ContextParams
    replicas: tuple[ReplicaRecord, ...]


@dataclass
class Candidate:
    """A node under consideration; fits-memory fills in the layers and memory the replica would take."""

    node: NodeRecord
    offer: NodeResources  # free memory less what placed-but-not-running replicas will take
    n_gpu_layers: int = 0
    host_bytes: int = 0
    vram_bytes: int = 0
    notes: dict[str, float] = field(default_factory=dict)  # scorer → score, for events


class Filter(Protocol):
    name: str

    def reject(self, ctx: PlacementContext, cand: Candidate) -> str | None:
        """Why ``cand`` cannot host the replica, or None to keep it."""


class Scorer(Protocol):
    name: str

    def score(self, ctx: PlacementContext, cand: Candidate) -> float:
        """How good ``cand`` is, in [0, 1]."""


class NodeReady:
    name = "node-ready"

    def reject(self, ctx: PlacementContext, cand: Candidate) -> str | None:
        return None if cand.node.connected else "not connected"


class NodeSelector:
    name = "node-selector"

    def reject(self, ctx: PlacementContext, cand: Candidate) -> str | None:
        labels = cand.node.labels
        missing = {k: v for k, v in ctx.spec.node_selector.items() if labels.get(k) != v}
        if not missing:
            return None
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(missing.items()))
        return f"labels do not match nodeSelector ({wanted})"


class FitsMemory:
    """The memory model decides: gpuLayers auto takes the most layers the node's GPUs hold.

    The engine splits its GPU layers over every GPU of the node, so all of them are used together.
    VRAM only grows and host memory only shrinks as layers move to the GPUs, so the most layers
    whose VRAM fits (a binary search) is also the best chance for host memory; when not even one
    layer fits the GPUs, CPU mode decides.
    """

    name = "fits-memory"

    def reject(self, ctx: PlacementContext, cand: Candidate) -> str | None:
        offer = cand.offer
        if ctx.profile is None:  # no header anywhere: the file size and a flat allowance
            info = cand.node.cached_models.get(ctx.spec.source)
            need = (info.size_bytes if info else 0) + RUNTIME_OVERHEAD_BYTES
            if offer.ram_free_bytes < need:
                return f"needs {need / MiB:.0f} MiB RAM, {offer.ram_free_bytes / MiB:.0f} MiB free"
            cand.host_bytes = need
            return None
        if ctx.spec.gpu_layers != "auto":
            # without GPUs llama.cpp runs every layer on the CPU
            ngl = ctx.spec.gpu_layers if offer.gpus else 0
            est, short = fixed_layers_shortfall(ctx.profile, ctx.params, offer, ngl)
            if short:
                return f"with {ctx.spec.gpu_layers} GPU layers {short}"
            return self._take(cand, ngl, est)
        most = self._most_gpu_layers(ctx.profile, ctx.params, offer)
        est, short = fixed_layers_shortfall(ctx.profile, ctx.params, offer, most)
        if not short:
            return self._take(cand, most, est)
        cpu_est, cpu_short = fixed_layers_shortfall(ctx.profile, ctx.params, offer, 0)
        if not cpu_short:
            return self._take(cand, 0, cpu_est)
        reason = f"cpu mode {cpu_short}"
        if offer.gpus:
            _, gpu_short = fixed_layers_shortfall(ctx.profile, ctx.params, offer, max(most, 1))
            reason += f"; {'+'.join(g.name for g in offer.gpus)} mode {gpu_short}"
        return reason

    @staticmethod
    def _most_gpu_layers(profile: ModelProfile, params: ContextParams, offer: NodeResources) -> int:
        lo, hi = 0, profile.n_layer + 1 if offer.gpus else 0
        while lo < hi:
            mid = (lo + hi + 1) // 2
            est, _ = fixed_layers_shortfall(profile, params, offer, mid)
            if all(est.device(g.name).total_bytes <= g.free_bytes for g in offer.gpus):
                lo = mid
            else:
                hi = mid - 1
        return lo

    @staticmethod
    def _take(cand: Candidate, ngl: int, est: Estimate) -> None:
        cand.n_gpu_layers, cand.host_bytes, cand.vram_bytes = ngl, est.host_bytes, est.vram_bytes


def _use_after(cand: Candidate) -> float:
    """Fraction of the node's memory in use after the replica lands: VRAM when it offloads, else RAM."""
    if cand.n_gpu_layers and cand.offer.gpus:
        total = sum(g.total_bytes or g.free_bytes for g in cand.offer.gpus)
        free = sum(g.free_bytes for g in cand.offer.gpus)
        need = cand.vram_bytes
    else:
        total = cand.node.ram_total_bytes or cand.offer.ram_free_bytes
        free, need = cand.offer.ram_free_bytes, cand.host_bytes
    if total <= 0:
        return 1.0
    return min(max((total - free + need) / total, 0.0), 1.0)


class Binpack:
    name = "binpack"

    def score(self, ctx: PlacementContext, cand: Candidate) -> float:
        return _use_after(cand)


class Spread:
    name = "spread"

    def score(self, ctx: PlacementContext, cand: Candidate) -> float:
        return 1.0 - _use_after(cand)


class ModelStrategy:
    """Each model's own ``placement``: spread (default) or binpack."""

    name = "model-strategy"

    def score(self, ctx: PlacementContext, cand: Candidate) -> float:
        used = _use_after(cand)
        return used if ctx.spec.placement == "binpack" else 1.0 - used


class CacheLocality:
    name = "cache-locality"

    def score(self, ctx: PlacementContext, cand: Candidate) -> float:
        info = cand.node.cached_models.get(ctx.spec.source)
        return 1.0 if info is not None and not info.error else 0.0


class ReplicaSpread:
    """Anti-affinity between replicas of one model: a node already running n of them scores 1/(n+1)."""

    name = "replica-spread"

    def score(self, ctx: PlacementContext, cand: Candidate) -> float:
        here = sum(1 for r in ctx.replicas if r.model == ctx.spec.name and r.node_id == cand.node.node_id)
        return 1.0 / (here + 1)


FILTERS: dict[str, Filter] = {f.name: f for f in (NodeReady(), NodeSelector(), FitsMemory())}
SCORERS: dict[str, Scorer] = {
    s.name: s for s in (ModelStrategy(), Binpack(), Spread(), CacheLocality(), ReplicaSpread())
}

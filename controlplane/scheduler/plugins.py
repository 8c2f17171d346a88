"""The scheduler's plugins, evaluated over every node at once (a NodeTable of arrays).

Filters: node-ready, node-selector, fits-memory (the memory model's curves by GPU layer count:
gpuLayers auto takes the most layers whose VRAM fits all the node's GPUs, then CPU mode; a fixed
count is checked as given). A filter returns which nodes it keeps and, only when nothing fits,
says why it rejected a node. Scorers rate the surviving nodes in [0, 1]: binpack and spread
(memory use after placement on the resource the replica mostly uses), model-strategy (each
model's own spread/binpack), cache-locality (the node holds the file), replica-spread
(anti-affinity between replicas of one model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from controlplane.domain import ModelSpec, NodeRecord, ReplicaRecord
from llamafleet.fit.components import ContextParams, repack_types
from llamafleet.fit.curves import OffloadCurves, offload_curves
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import Gpu, gib

MiB = 1 << 20
RUNTIME_OVERHEAD_BYTES = 256 * MiB  # without a header: on top of the file size


@dataclass(frozen=True)
class PlacementContext:
    """What every plugin may read about the replica being placed."""

    spec: ModelSpec
    profile: ModelProfile | None  # None: no node has reported a readable header
    params: ContextParams
    replicas: tuple[ReplicaRecord, ...]


@dataclass(frozen=True)
class Shape:
    """What the memory curves depend on: the GPUs (names, kinds, sizes) and the CPU's repacking."""

    gpus: tuple[Gpu, ...]  # free memory left out: it varies by node
    cpu_flags: tuple[str, ...]

    def curves(self, profile: ModelProfile, params: ContextParams) -> OffloadCurves:
        shares = tuple(float(g.total_bytes or 1) for g in self.gpus)  # llama.cpp's split, by device size
        kinds = tuple(g.kind for g in self.gpus)
        return offload_curves(profile, params, shares, kinds, repack_types(self.cpu_flags))


@dataclass
class NodeTable:
    """The nodes of one placement as arrays; fits-memory fills in what the replica would take."""

    nodes: list[NodeRecord]
    ram_free: np.ndarray  # bytes, less what placed-but-not-running replicas will take
    ram_total: np.ndarray
    shape_of: np.ndarray  # index into shapes
    shapes: list[Shape]
    gpu_free: list[np.ndarray]  # per node: free bytes of each of its GPUs
    ngl: np.ndarray = field(init=False)
    host_need: np.ndarray = field(init=False)
    vram_need: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.ngl = np.zeros(len(self.nodes), dtype=np.int64)
        self.host_need = np.zeros(len(self.nodes))
        self.vram_need = np.zeros(len(self.nodes))

    @classmethod
    def build(cls, nodes: list[NodeRecord], reserved: dict[str, int]) -> NodeTable:
        shape_ids: dict[Shape, int] = {}
        shape_of = []
        for node in nodes:
            shape = Shape(tuple(Gpu(g.name, 0, g.total_bytes, g.kind) for g in node.gpus), node.cpu_flags)
            shape_of.append(shape_ids.setdefault(shape, len(shape_ids)))
        return cls(
            nodes=nodes,
            ram_free=np.array(
                [n.ram_free_bytes - reserved.get(n.node_id, 0) for n in nodes], dtype=np.float64
            ),
            ram_total=np.array([n.ram_total_bytes or n.ram_free_bytes for n in nodes], dtype=np.float64),
            shape_of=np.array(shape_of, dtype=np.int64),
            shapes=list(shape_ids),
            gpu_free=[np.array([g.free_bytes for g in n.gpus], dtype=np.float64) for n in nodes],
        )


class Filter(Protocol):
    name: str

    def keep(self, ctx: PlacementContext, table: NodeTable, alive: np.ndarray) -> np.ndarray:
        """Which of the ``alive`` nodes stay (a boolean array over every node)."""

    def reason(self, ctx: PlacementContext, table: NodeTable, i: int) -> str:
        """Why node ``i`` was not kept, for people."""


class Scorer(Protocol):
    name: str

    def score(self, ctx: PlacementContext, table: NodeTable, idx: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] for the nodes ``idx``."""


class NodeReady:
    name = "node-ready"

    def keep(self, ctx: PlacementContext, table: NodeTable, alive: np.ndarray) -> np.ndarray:
        connected: np.ndarray = alive & np.array([n.connected for n in table.nodes], dtype=bool)
        return connected

    def reason(self, ctx: PlacementContext, table: NodeTable, i: int) -> str:
        return "not connected"


class NodeSelector:
    name = "node-selector"

    def keep(self, ctx: PlacementContext, table: NodeTable, alive: np.ndarray) -> np.ndarray:
        wanted = ctx.spec.node_selector
        if not wanted:
            return alive
        matching: np.ndarray = alive & np.array(
            [all(n.labels.get(k) == v for k, v in wanted.items()) for n in table.nodes], dtype=bool
        )
        return matching

    def reason(self, ctx: PlacementContext, table: NodeTable, i: int) -> str:
        labels = table.nodes[i].labels
        missing = {k: v for k, v in ctx.spec.node_selector.items() if labels.get(k) != v}
        return (
            f"labels do not match nodeSelector ({', '.join(f'{k}={v}' for k, v in sorted(missing.items()))})"
        )


class FitsMemory:
    """The memory model decides, from each machine shape's curves of memory by GPU layer count.

    The engine splits its GPU layers over every GPU of the node. With gpuLayers auto the replica
    takes the most layers whose VRAM fits; host memory only shrinks as layers move to the GPUs,
    so if that count does not fit the RAM, none does, and CPU mode decides.
    """

    name = "fits-memory"

    def keep(self, ctx: PlacementContext, table: NodeTable, alive: np.ndarray) -> np.ndarray:
        keep = np.zeros(len(table.nodes), dtype=bool)
        if ctx.profile is None:  # no header anywhere: the file size and a flat allowance
            need = np.array([self._flat_need(ctx, n) for n in table.nodes], dtype=np.float64)
            keep = alive & (need <= table.ram_free)
            table.host_need = need
            return keep
        for s, shape in enumerate(table.shapes):
            idx = np.flatnonzero(alive & (table.shape_of == s))
            if not len(idx):
                continue
            curves = shape.curves(ctx.profile, ctx.params)
            for i in idx:  # per node: a handful of array comparisons
                ngl = self._layers(ctx, curves, shape, table.gpu_free[i], table.ram_free[i])
                if ngl is None:
                    continue
                keep[i] = True
                table.ngl[i] = ngl
                table.host_need[i] = curves.host[ngl]
                table.vram_need[i] = curves.device[ngl].sum() if ngl else 0.0
        return keep

    def _layers(
        self,
        ctx: PlacementContext,
        curves: OffloadCurves,
        shape: Shape,
        gpu_free: np.ndarray,
        ram_free: float,
    ) -> int | None:
        """The GPU layers this node takes, or None when it cannot host the replica."""
        top = len(curves.host) - 1
        if ctx.spec.gpu_layers != "auto":
            wanted = ctx.spec.gpu_layers if shape.gpus else 0  # without GPUs every layer runs on the CPU
            g = top if wanted < 0 else min(wanted, top)
            fits = curves.host[g] <= ram_free and (g == 0 or bool((curves.device[g] <= gpu_free).all()))
            return g if fits else None
        if shape.gpus:
            fitting = np.flatnonzero((curves.device[1:] <= gpu_free).all(axis=1)) + 1
            if len(fitting) and curves.host[fitting[-1]] <= ram_free:
                return int(fitting[-1])
        return 0 if curves.host[0] <= ram_free else None

    @staticmethod
    def _flat_need(ctx: PlacementContext, node: NodeRecord) -> float:
        info = node.cached_models.get(ctx.spec.source)
        return float((info.size_bytes if info else 0) + RUNTIME_OVERHEAD_BYTES)

    def reason(self, ctx: PlacementContext, table: NodeTable, i: int) -> str:
        free = table.ram_free[i]
        if ctx.profile is None:
            need = self._flat_need(ctx, table.nodes[i])
            return f"needs {need / MiB:.0f} MiB RAM, {max(free, 0) / MiB:.0f} MiB free"
        shape = table.shapes[table.shape_of[i]]
        curves = shape.curves(ctx.profile, ctx.params)
        top = len(curves.host) - 1

        def short(g: int) -> str:
            problems = []
            if curves.host[g] > free:
                problems.append(
                    f"needs {gib(int(curves.host[g]))} RAM, {gib(int(max(free, 0)))} free "
                    f"(short {gib(int(curves.host[g] - free))})"
                )
            for d, gpu in enumerate(shape.gpus if g else ()):
                need, available = curves.device[g, d], table.gpu_free[i][d]
                if need > available:
                    missing = gib(int(need - available))
                    problems.append(
                        f"{gpu.name} needs {gib(int(need))}, {gib(int(available))} free (short {missing})"
                    )
            return "; ".join(problems)

        if ctx.spec.gpu_layers != "auto":
            wanted = ctx.spec.gpu_layers if shape.gpus else 0
            return f"with {ctx.spec.gpu_layers} GPU layers {short(top if wanted < 0 else min(wanted, top))}"
        reason = f"cpu mode {short(0)}"
        if shape.gpus:
            fitting = np.flatnonzero((curves.device[1:] <= table.gpu_free[i]).all(axis=1)) + 1
            g = int(fitting[-1]) if len(fitting) else 1
            reason += f"; {'+'.join(gpu.name for gpu in shape.gpus)} mode {short(g)}"
        return reason


def _use_after(table: NodeTable, idx: np.ndarray) -> np.ndarray:
    """Fraction of each node's memory in use after the replica lands: VRAM when it offloads, else RAM."""
    out = np.empty(len(idx))
    for k, i in enumerate(idx):
        free = table.gpu_free[i]
        if table.ngl[i] and len(free):
            total = sum(g.total_bytes or g.free_bytes for g in table.nodes[i].gpus)
            used = total - free.sum() + table.vram_need[i]
        else:
            total = table.ram_total[i]
            used = total - table.ram_free[i] + table.host_need[i]
        out[k] = used / total if total > 0 else 1.0
    return np.clip(out, 0.0, 1.0)


class Binpack:
    name = "binpack"

    def score(self, ctx: PlacementContext, table: NodeTable, idx: np.ndarray) -> np.ndarray:
        return _use_after(table, idx)


class Spread:
    name = "spread"

    def score(self, ctx: PlacementContext, table: NodeTable, idx: np.ndarray) -> np.ndarray:
        return 1.0 - _use_after(table, idx)


class ModelStrategy:
    """Each model's own ``placement``: spread (default) or binpack."""

    name = "model-strategy"

    def score(self, ctx: PlacementContext, table: NodeTable, idx: np.ndarray) -> np.ndarray:
        used = _use_after(table, idx)
        return used if ctx.spec.placement == "binpack" else 1.0 - used


class CacheLocality:
    name = "cache-locality"

    def score(self, ctx: PlacementContext, table: NodeTable, idx: np.ndarray) -> np.ndarray:
        source = ctx.spec.source
        return np.array(
            [1.0 if (info := table.nodes[i].cached_models.get(source)) is not None and not info.error else 0.0
             for i in idx]
        )  # fmt: skip


class ReplicaSpread:
    """Anti-affinity between replicas of one model: a node already running n of them scores 1/(n+1)."""

    name = "replica-spread"

    def score(self, ctx: PlacementContext, table: NodeTable, idx: np.ndarray) -> np.ndarray:
        here: dict[str, int] = {}
        for r in ctx.replicas:
            if r.model == ctx.spec.name and r.node_id:
                here[r.node_id] = here.get(r.node_id, 0) + 1
        return np.array([1.0 / (here.get(table.nodes[i].node_id, 0) + 1) for i in idx])


FILTERS: dict[str, Filter] = {f.name: f for f in (NodeReady(), NodeSelector(), FitsMemory())}
SCORERS: dict[str, Scorer] = {
    s.name: s for s in (ModelStrategy(), Binpack(), Spread(), CacheLocality(), ReplicaSpread())
}

"""The scheduler's plugins, evaluated over every node at once (a NodeTable of arrays).

Filters: node-ready, node-selector, fits-memory (the memory model's curves by GPU layer count:
gpuLayers auto takes the most layers whose VRAM fits all the node's GPUs, then CPU mode; a fixed
count is checked as given), fits-cpu (the node's usable CPUs against the threads its replicas hold,
llamafleet.core.threads). A filter returns which nodes it keeps and, only when nothing fits,
says why it rejected a node. Scorers rate the surviving nodes in [0, 1]: binpack and spread
(memory use after placement on the resource the replica mostly uses), model-strategy (each
model's own spread/binpack), cache-locality (the node holds the file), replica-spread
(anti-affinity between replicas of one model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from controlplane.domain import ModelSpec, NodeRecord, ReplicaPhase, ReplicaRecord
from controlplane.scheduler.fit import Shape
from controlplane.scheduler.placement import RUNTIME_OVERHEAD_BYTES, MiB
from llamafleet.core.threads import cpu_request
from llamafleet.fit.components import ContextParams
from llamafleet.fit.curves import OffloadCurves
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import gib, ram_short


@dataclass(frozen=True)
class PlacementContext:
    """What every plugin may read about the replica being placed."""

    spec: ModelSpec
    profile: ModelProfile | None  # None: no node has reported a readable header
    params: ContextParams
    replicas: tuple[ReplicaRecord, ...]


SHARES_PAGES = (ReplicaPhase.ASSIGNED, ReplicaPhase.STARTING, ReplicaPhase.READY)
# Placed and not failed for good: its process runs, or will, and computes with its threads.
HOLDS_CPUS = (ReplicaPhase.ASSIGNED, ReplicaPhase.STARTING, ReplicaPhase.READY, ReplicaPhase.RESTARTING,
              ReplicaPhase.STOPPING)  # fmt: skip


@dataclass
class NodeTable:
    """The nodes of a placement pass as arrays, kept current as replicas are placed in the pass.

    Static per pass: connection, RAM size, machine shape and GPU sizes. Dynamic: free RAM and GPU
    memory (less what placed-but-not-running replicas will take), replicas per model per node.
    fits-memory fills ``ngl``/``host_need``/``vram_need`` for the replica being placed.
    """

    nodes: list[NodeRecord]
    connected: np.ndarray
    cordoned: np.ndarray
    ram_free: np.ndarray  # bytes
    ram_total: np.ndarray
    shape_of: np.ndarray  # index into shapes
    shapes: list[Shape]
    shape_rows: list[np.ndarray]  # the nodes of each shape
    row_in_shape: np.ndarray  # each node's row in its shape's GPU matrix
    shape_free: list[np.ndarray]  # per shape: [nodes, GPUs] free bytes
    gpu_total: np.ndarray  # per node, all GPUs
    gpu_free_total: np.ndarray  # per node, all GPUs
    replicas_here: dict[str, np.ndarray] = field(default_factory=dict)  # model → replicas per node
    holders: dict[str, np.ndarray] = field(default_factory=dict)  # source → nodes holding a good copy
    # source → nodes where a CPU-mode replica of it runs or is placed: its memory-mapped weights are
    # in that node's page cache once, and another CPU-mode replica of the file shares them.
    mapped: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[object, np.ndarray] = field(default_factory=dict)  # plugin caches for the pass
    # CPUs its engines share (0: unknown, not counted), and those its replicas hold (cpu_request each).
    cpu_usable: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cpu_held: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ngl: np.ndarray = field(init=False)
    host_need: np.ndarray = field(init=False)
    vram_need: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the last replica's fit (before placing the next)."""
        self.ngl = np.zeros(len(self.nodes), dtype=np.int64)
        self.host_need = np.zeros(len(self.nodes))
        self.vram_need = np.zeros(len(self.nodes))

    def gpu_free(self, i: int) -> np.ndarray:
        free: np.ndarray = self.shape_free[self.shape_of[i]][self.row_in_shape[i]]
        return free

    def take(
        self,
        i: int,
        model: str,
        host_bytes: float,
        device_bytes: np.ndarray | None,
        source: str = "",
        ngl: int = -1,
        cpus: int = 1,
    ) -> None:
        """A replica was placed on node ``i``: its memory and CPUs are not free for the rest of the pass."""
        self.ram_free[i] -= host_bytes
        self.cpu_held[i] += cpus
        if source and ngl == 0:
            self.mapped.setdefault(source, np.zeros(len(self.nodes), dtype=bool))[i] = True
        if device_bytes is not None:
            self.shape_free[self.shape_of[i]][self.row_in_shape[i]] -= device_bytes
            self.gpu_free_total[i] -= device_bytes.sum()
        counts = self.replicas_here.setdefault(model, np.zeros(len(self.nodes)))
        counts[i] += 1

    @classmethod
    def build(
        cls, nodes: list[NodeRecord], reserved: dict[str, int], replicas: tuple[ReplicaRecord, ...]
    ) -> NodeTable:
        shape_ids: dict[Shape, int] = {}
        shape_of = []
        for node in nodes:
            shape_of.append(shape_ids.setdefault(Shape.of(node), len(shape_ids)))
        shape_arr = np.array(shape_of, dtype=np.int64)
        rows = [np.flatnonzero(shape_arr == s) for s in range(len(shape_ids))]
        row_in_shape = np.zeros(len(nodes), dtype=np.int64)
        free = []
        for s, members in enumerate(rows):
            row_in_shape[members] = np.arange(len(members))
            k = len(list(shape_ids)[s].gpus)
            matrix = np.array([[g.free_bytes for g in nodes[i].gpus] for i in members], dtype=np.float64)
            free.append(matrix.reshape(len(members), k))
        index = {n.node_id: i for i, n in enumerate(nodes)}
        holding: dict[str, list[int]] = {}
        for i, node in enumerate(nodes):
            for source, info in node.cached_models.items():
                if not info.error:
                    holding.setdefault(source, []).append(i)
        here: dict[str, np.ndarray] = {}
        mapped: dict[str, np.ndarray] = {}
        held = np.zeros(len(nodes))
        for r in replicas:
            if r.phase in HOLDS_CPUS:
                for node_id in (r.node_id, *(p.node_id for p in r.parts)):
                    if node_id in index:
                        held[index[node_id]] += cpu_request(r.spec.threads)
            if r.node_id in index:
                here.setdefault(r.model, np.zeros(len(nodes)))[index[r.node_id]] += 1
                if r.n_gpu_layers == 0 and not r.parts and r.phase in SHARES_PAGES:
                    mapped.setdefault(r.spec.source, np.zeros(len(nodes), dtype=bool))[index[r.node_id]] = (
                        True
                    )
        return cls(
            nodes=nodes,
            connected=np.array([n.connected for n in nodes], dtype=bool),
            cordoned=np.array([n.closed for n in nodes], dtype=bool),
            ram_free=np.array(
                [n.ram_free_bytes - reserved.get(n.node_id, 0) for n in nodes], dtype=np.float64
            ),
            ram_total=np.array([n.ram_total_bytes or n.ram_free_bytes for n in nodes], dtype=np.float64),
            shape_of=shape_arr,
            shapes=list(shape_ids),
            shape_rows=rows,
            row_in_shape=row_in_shape,
            shape_free=free,
            gpu_total=np.array(
                [sum(g.total_bytes or g.free_bytes for g in n.gpus) for n in nodes], dtype=np.float64
            ),
            gpu_free_total=np.array([sum(g.free_bytes for g in n.gpus) for n in nodes], dtype=np.float64),
            replicas_here=here,
            holders={source: np.array(found) for source, found in holding.items()},
            mapped=mapped,
            cpu_usable=np.array([n.cpu_usable for n in nodes], dtype=np.float64),
            cpu_held=held,
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
        schedulable: np.ndarray = alive & table.connected & ~table.cordoned
        return schedulable

    def reason(self, ctx: PlacementContext, table: NodeTable, i: int) -> str:
        node = table.nodes[i]
        if node.deleted:
            return "its Kubernetes Node was deleted"
        if node.draining:
            return f"draining (Kubernetes Node taint {node.draining})"
        if node.cordoned:
            return "cordoned (drained)"
        if node.unschedulable:
            return "unschedulable (its Kubernetes Node is cordoned)"
        return "not connected"


class NodeSelector:
    name = "node-selector"

    def keep(self, ctx: PlacementContext, table: NodeTable, alive: np.ndarray) -> np.ndarray:
        wanted = ctx.spec.node_selector
        if not wanted:
            return alive
        key = ("node-selector", tuple(sorted(wanted.items())))
        if key not in table.masks:
            table.masks[key] = np.array(
                [all(n.labels.get(k) == v for k, v in wanted.items()) for n in table.nodes], dtype=bool
            )
        matching: np.ndarray = alive & table.masks[key]
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
            table.host_need = need
            kept: np.ndarray = alive & (need <= table.ram_free)
            return kept
        for s, shape in enumerate(table.shapes):
            members = table.shape_rows[s]
            idx = members[alive[members]]
            if not len(idx):
                continue
            curves = shape.curves(ctx.profile, ctx.params)
            # In CPU mode a replica maps the file's weights; where another one of the file already
            # does, those pages are resident once and shared: they are not needed again.
            shared = table.mapped.get(ctx.spec.source, np.zeros(len(table.nodes), dtype=bool))[idx]
            cpu_only = not shape.gpus or ctx.spec.gpu_layers == 0
            credit = np.where(shared & cpu_only, float(ctx.profile.weight_bytes), 0.0)
            ngl, ok = self._layers(
                ctx, curves, shape, table.shape_free[s][table.row_in_shape[idx]], table.ram_free[idx] + credit
            )
            chosen = idx[ok]
            keep[chosen] = True
            table.ngl[chosen] = ngl[ok]
            table.host_need[chosen] = curves.host[ngl[ok]] - np.where(ngl[ok] == 0, credit[ok], 0.0)
            table.vram_need[chosen] = np.where(ngl[ok] > 0, curves.device[ngl[ok]].sum(axis=1), 0.0)
        return keep

    @staticmethod
    def _layers(
        ctx: PlacementContext, curves: OffloadCurves, shape: Shape, gpu_free: np.ndarray, ram_free: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per node: the GPU layers it would take, and whether it can host the replica at all."""
        if ctx.spec.gpu_layers != "auto":
            assert ctx.profile is not None
            g = shape.layers(ctx.profile, ctx.spec.gpu_layers)
            ok = curves.host[g] <= ram_free
            if g:
                ok &= (curves.device[g][None, :] <= gpu_free).all(axis=1)
            return np.full(len(ram_free), g), ok
        cpu_ok = curves.host[0] <= ram_free
        if not shape.gpus:
            return np.zeros(len(ram_free), dtype=np.int64), cpu_ok
        most = curves.most_layers(gpu_free)
        gpu_ok = (most > 0) & (curves.host[most] <= ram_free)
        return np.where(gpu_ok, most, 0), gpu_ok | cpu_ok

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

        def short(g: int) -> str:
            problems = []
            if curves.host[g] > free:
                problems.append(ram_short(int(curves.host[g]), int(free), ctx.params.prompt_cache_bytes))
            for d, gpu in enumerate(shape.gpus if g else ()):
                need, available = curves.device[g, d], table.gpu_free(i)[d]
                if need > available:
                    missing = gib(int(need - available))
                    problems.append(
                        f"{gpu.name} needs {gib(int(need))}, {gib(int(available))} free (short {missing})"
                    )
            return "; ".join(problems)

        if ctx.spec.gpu_layers != "auto":
            layers = shape.layers(ctx.profile, ctx.spec.gpu_layers)
            return f"with {ctx.spec.gpu_layers} GPU layers {short(layers)}"
        reason = f"cpu mode {short(0)}"
        if shape.gpus:
            fitting = np.flatnonzero((curves.device[1:] <= table.gpu_free(i)).all(axis=1)) + 1
            g = int(fitting[-1]) if len(fitting) else 1
            reason += f"; {'+'.join(gpu.name for gpu in shape.gpus)} mode {short(g)}"
        return reason


class FitsCpu:
    """A node's usable CPUs are held like its memory: each replica holds the threads its Model asks for,
    or one when it leaves the count to the node (its agent shares the CPUs among such replicas). A
    Model asking for more threads than a node has never goes there; a node whose CPUs are all held
    takes more replicas only of Models with ``shareCpus``. Nodes that report no CPU count pass."""

    name = "fits-cpu"

    def keep(self, ctx: PlacementContext, table: NodeTable, alive: np.ndarray) -> np.ndarray:
        need = cpu_request(ctx.spec.threads)
        known = table.cpu_usable > 0
        too_many = known & (need > table.cpu_usable)
        full = known & (table.cpu_held + need > table.cpu_usable) & (not ctx.spec.share_cpus)
        kept: np.ndarray = alive & ~too_many & ~full
        return kept

    def reason(self, ctx: PlacementContext, table: NodeTable, i: int) -> str:
        need, usable, held = cpu_request(ctx.spec.threads), int(table.cpu_usable[i]), int(table.cpu_held[i])
        summary = table.nodes[i].cpu_summary or str(usable)
        if need > usable:
            return f"threads {need} is more than its {usable} usable CPUs ({summary}); lower threads"
        return (
            f"its CPUs are taken: replicas there hold {held} of {usable} ({summary}), this one needs {need}; "
            "add a node, or set shareCpus: true on the model to let replicas share cores"
        )


def _use_after(table: NodeTable, idx: np.ndarray) -> np.ndarray:
    """Fraction of each node's memory in use after the replica lands: VRAM when it offloads, else RAM."""
    gpu_free = table.gpu_free_total[idx]
    offloads = (table.ngl[idx] > 0) & (table.gpu_total[idx] > 0)
    total = np.where(offloads, table.gpu_total[idx], table.ram_total[idx])
    used = np.where(
        offloads,
        table.gpu_total[idx] - gpu_free + table.vram_need[idx],
        table.ram_total[idx] - table.ram_free[idx] + table.host_need[idx],
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, used / total, 1.0)
    clipped: np.ndarray = np.clip(share, 0.0, 1.0)
    return clipped


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
        holders = table.holders.get(ctx.spec.source)
        if holders is None:
            return np.zeros(len(idx))
        held: np.ndarray = np.isin(idx, holders).astype(np.float64)
        return held


class ReplicaSpread:
    """Anti-affinity between replicas of one model: a node already running n of them scores 1/(n+1)."""

    name = "replica-spread"

    def score(self, ctx: PlacementContext, table: NodeTable, idx: np.ndarray) -> np.ndarray:
        counts = table.replicas_here.get(ctx.spec.name)
        if counts is None:
            return np.ones(len(idx))
        spread: np.ndarray = 1.0 / (counts[idx] + 1.0)
        return spread


FILTERS: dict[str, Filter] = {f.name: f for f in (NodeReady(), NodeSelector(), FitsMemory(), FitsCpu())}
SCORERS: dict[str, Scorer] = {
    s.name: s for s in (ModelStrategy(), Binpack(), Spread(), CacheLocality(), ReplicaSpread())
}

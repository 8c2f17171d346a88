"""The scheduler: filters → scorers → pick, as configured by a profile; every decision is an event.

For each replica every node goes through the profile's filters in order (the first to reject
gives the node's reason); the survivors are scored by the weighted mean of the scorers; the
highest wins (ties: node name). Plugins work on all nodes at once (plugins.NodeTable), and the
memory model's curves are shared by every node of a machine shape. When no node survives and
the model allows splitting, a split plan is computed. Placements and rejections are logged,
counted in metrics, and reach the model's Placed condition through the reconciler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np

from controlplane.domain import ModelSpec, NodeRecord, ReplicaPhase, ReplicaRecord
from controlplane.metrics import ControlPlaneMetrics
from controlplane.scheduler.fit import context_params, node_resources, profile_for
from controlplane.scheduler.placement import Placed, Unplaceable, host_bytes_needed
from controlplane.scheduler.plugins import FILTERS, SCORERS, NodeTable, PlacementContext
from controlplane.scheduler.profile import SchedulerProfile
from controlplane.scheduler.split import plan_split

log = logging.getLogger(__name__)

WAITING = "has not yet reported whether it holds the model file"


def reservations(replicas: Iterable[ReplicaRecord], nodes: list[NodeRecord]) -> dict[str, int]:
    """Host memory promised to replicas placed but not yet running, by node (not in its free RAM yet)."""
    by_id = {n.node_id: n for n in nodes}
    reserved: dict[str, int] = {}
    for r in replicas:
        if r.phase != ReplicaPhase.ASSIGNED or r.node_id not in by_id:
            continue
        need = r.reserved_host_bytes or host_bytes_needed(
            r.spec, by_id[r.node_id], profile_for(r.spec.source, nodes)[0], r.n_gpu_layers
        )
        reserved[r.node_id] = reserved.get(r.node_id, 0) + need
    return reserved


class Scheduler:
    def __init__(
        self, profile: SchedulerProfile | None = None, metrics: ControlPlaneMetrics | None = None
    ) -> None:
        self.profile = profile or SchedulerProfile()
        self._filters = [FILTERS[name] for name in self.profile.filters]
        self._scorers = [(SCORERS[ref.name], ref.weight) for ref in self.profile.scorers]
        self._metrics = metrics

    def place(
        self, spec: ModelSpec, nodes: Iterable[NodeRecord], replicas: Iterable[ReplicaRecord]
    ) -> Placed | Unplaceable:
        started = time.perf_counter()
        decision = self._place(spec, sorted(nodes, key=lambda n: n.node_id), tuple(replicas))
        if self._metrics is not None:
            self._metrics.placement_seconds.observe(time.perf_counter() - started)
            result = "placed" if isinstance(decision, Placed) else "pending"
            self._metrics.decisions.labels(spec.name, result).inc()
        return decision

    def _place(
        self, spec: ModelSpec, nodes: list[NodeRecord], replicas: tuple[ReplicaRecord, ...]
    ) -> Placed | Unplaceable:
        profile, error = profile_for(spec.source, nodes)
        if profile is None and not error:
            waiting = [n.node_id for n in nodes if n.connected and not n.models_reported]
            if waiting:  # they have been asked whether they hold the file; wait for the answer
                return Unplaceable(dict.fromkeys(waiting, WAITING))
        ctx = PlacementContext(spec, profile, context_params(spec), replicas)
        reserved = reservations(replicas, nodes)
        table = NodeTable.build(nodes, reserved)
        alive = np.ones(len(nodes), dtype=bool)
        rejected_by: dict[int, int] = {}
        for index, plugin in enumerate(self._filters):
            kept = plugin.keep(ctx, table, alive)
            for i in np.flatnonzero(alive & ~kept):
                rejected_by[int(i)] = index
                if self._metrics is not None:
                    self._metrics.rejections.labels(plugin.name).inc()
            alive = kept
        survivors = np.flatnonzero(alive)
        if not len(survivors):
            reasons = {
                nodes[i].node_id: self._filters[f].reason(ctx, table, i) for i, f in rejected_by.items()
            }
            plan = None
            if spec.allow_split and profile is not None:
                offers = [node_resources(n, reserved.get(n.node_id, 0)) for n in nodes if n.connected]
                plan = plan_split(profile, ctx.params, offers)
            return Unplaceable(reasons, plan)
        total = np.zeros(len(survivors))
        weights = 0.0
        for scorer, weight in self._scorers:
            total += weight * scorer.score(ctx, table, survivors)
            weights += weight
        scores = total / (weights or 1.0)
        best = int(np.argmax(scores))  # the first of equals: nodes are in name order
        chosen = int(survivors[best])
        return Placed(
            nodes[chosen].node_id,
            int(table.ngl[chosen]),
            round(float(scores[best]), 4),
            int(table.host_need[chosen]),
        )

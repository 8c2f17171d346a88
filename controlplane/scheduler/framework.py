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
from llamafleet.core.threads import cpu_request
from llamafleet.fit.profile import ModelProfile

log = logging.getLogger(__name__)

WAITING = "has not yet reported whether it holds the model file"


# Placed, not serving yet: assigned, or starting (its file downloading, its engine loading). Its memory
# is not in its node's free RAM yet, or only in part; once ready, the node's report has all of it (and
# its agent counts what the engine's prompt cache may still take: nodeagent/memory.py).
NOT_LOADED = (ReplicaPhase.ASSIGNED, ReplicaPhase.STARTING)


def reservations(replicas: Iterable[ReplicaRecord], nodes: list[NodeRecord]) -> dict[str, int]:
    """Host memory promised to replicas placed but not yet running, by node (not in its free RAM yet).
    A starting replica holds all of it until ready: a download can take minutes, in which the node's
    free memory does not show the model, and another replica placed into it would meet it at load. While
    an engine loads, what it already holds counts twice, for those seconds."""
    by_id = {n.node_id: n for n in nodes}
    reserved: dict[str, int] = {}
    # CPU-mode replicas of one file on one node map its weights once: a replica placed beside one
    # that runs or is placed already was placed without them (FitsMemory), and holds no more here.
    mapped = {(r.node_id, r.spec.source) for r in replicas if r.n_gpu_layers == 0 and not r.parts
              and r.phase == ReplicaPhase.READY}  # fmt: skip
    for r in sorted(replicas, key=lambda r: r.replica_id):
        if r.parts and r.phase != ReplicaPhase.READY:  # a split's workers take their memory as the head loads
            for part in r.parts:
                reserved[part.node_id] = reserved.get(part.node_id, 0) + part.reserved_bytes
        if r.phase not in NOT_LOADED or r.node_id not in by_id:
            continue
        profile = profile_for(r.spec.source, nodes)[0]
        need = r.reserved_host_bytes or host_bytes_needed(r.spec, by_id[r.node_id], profile, r.n_gpu_layers)
        if r.n_gpu_layers == 0 and not r.parts and profile is not None:
            if not r.reserved_host_bytes and (r.node_id, r.spec.source) in mapped:
                need = max(0, need - profile.weight_bytes)
            mapped.add((r.node_id, r.spec.source))
        reserved[r.node_id] = reserved.get(r.node_id, 0) + need
    return reserved


def profiles_by_source(nodes: list[NodeRecord]) -> dict[str, tuple[ModelProfile | None, str]]:
    """Like scheduler.fit.profile_for for every source at once: a profile, else a header error."""
    found: dict[str, tuple[ModelProfile | None, str]] = {}
    for node in nodes:  # in name order, as profile_for
        for source, info in node.cached_models.items():
            current = found.get(source)
            if current is None or (current[0] is None and info.profile is not None):
                found[source] = (info.profile, "" if info.profile is not None else info.error)
            elif current[0] is None and not current[1] and info.error:
                found[source] = (None, info.error)
    return found


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
        return self.place_many([spec], nodes, replicas)[0]

    def place_many(
        self, specs: list[ModelSpec], nodes: Iterable[NodeRecord], replicas: Iterable[ReplicaRecord]
    ) -> list[Placed | Unplaceable]:
        """Place one replica of each spec, in order; each placement's memory counts for the next."""
        ordered = sorted(nodes, key=lambda n: n.node_id)
        existing = tuple(replicas)
        reserved = reservations(existing, ordered)
        table = NodeTable.build(ordered, reserved, existing)
        profiles = profiles_by_source(ordered)
        decisions: list[Placed | Unplaceable] = []
        for spec in specs:
            started = time.perf_counter()
            found = profiles.get(spec.source, (None, ""))
            decision = self._place(spec, found, ordered, existing, table, reserved)
            decisions.append(decision)
            if self._metrics is not None:
                self._metrics.placement_seconds.observe(time.perf_counter() - started)
                result = "placed" if isinstance(decision, Placed) else "pending"
                self._metrics.decisions.labels(spec.name, result).inc()
        return decisions

    def _place(
        self,
        spec: ModelSpec,
        found: tuple[ModelProfile | None, str],
        nodes: list[NodeRecord],
        replicas: tuple[ReplicaRecord, ...],
        table: NodeTable,
        reserved: dict[str, int],
    ) -> Placed | Unplaceable:
        profile, error = found
        if profile is None and not error:
            waiting = [n.node_id for n in nodes if n.connected and not n.models_reported]
            if waiting:  # they have been asked whether they hold the file; wait for the answer
                return Unplaceable(dict.fromkeys(waiting, WAITING))
        ctx = PlacementContext(spec, profile, context_params(spec), replicas)
        table.reset()
        alive = np.ones(len(nodes), dtype=bool)
        rejected_by: dict[int, int] = {}
        for index, plugin in enumerate(self._filters):
            kept = plugin.keep(ctx, table, alive)
            for i in np.flatnonzero(alive & ~kept):
                rejected_by[int(i)] = index
            if self._metrics is not None and (alive & ~kept).any():
                self._metrics.rejections.labels(plugin.name).inc(int((alive & ~kept).sum()))
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
        ngl = int(table.ngl[chosen])
        device = None
        if ngl and profile is not None:
            device = table.shapes[table.shape_of[chosen]].curves(profile, ctx.params).device[ngl]
        table.take(
            chosen, spec.name, float(table.host_need[chosen]), device, spec.source, int(table.ngl[chosen]),
            cpu_request(spec.threads),
        )  # fmt: skip
        return Placed(nodes[chosen].node_id, ngl, round(float(scores[best]), 4), int(table.host_need[chosen]))

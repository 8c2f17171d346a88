"""The scheduler: filters → scorers → pick, as configured by a profile; every decision is an event.

For each replica: every node passes the profile's filters in order (the first to reject gives
the node's reason); the survivors are scored by the weighted mean of the scorers; the highest
wins (ties: node name). When no node survives and the model allows splitting, a split plan is
computed. Placements and rejections are logged, counted in metrics and end up in the model's
Placed condition through the reconciler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from controlplane.domain import ModelSpec, NodeRecord, ReplicaRecord
from controlplane.metrics import ControlPlaneMetrics
from controlplane.scheduler.fit import context_params, node_resources, profile_for
from controlplane.scheduler.placement import Placed, Unplaceable, reserved_bytes
from controlplane.scheduler.plugins import FILTERS, SCORERS, Candidate, PlacementContext
from controlplane.scheduler.profile import SchedulerProfile
from controlplane.scheduler.split import plan_split

log = logging.getLogger(__name__)

WAITING = "has not yet reported whether it holds the model file"


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
            self._metrics.decisions.labels(
                spec.name, "placed" if isinstance(decision, Placed) else "pending"
            ).inc()
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
        reasons: dict[str, str] = {}
        survivors: list[Candidate] = []
        for node in nodes:
            cand = Candidate(node, node_resources(node, reserved_bytes(node, replicas, nodes)))
            for plugin in self._filters:
                reason = plugin.reject(ctx, cand)
                if reason is not None:
                    reasons[node.node_id] = reason
                    if self._metrics is not None:
                        self._metrics.rejections.labels(plugin.name).inc()
                    break
            else:
                survivors.append(cand)
        if not survivors:
            plan = None
            if spec.allow_split and profile is not None:
                offers = [node_resources(n, reserved_bytes(n, replicas, nodes)) for n in nodes if n.connected]
                plan = plan_split(profile, ctx.params, offers)
            return Unplaceable(reasons, plan)
        total_weight = sum(weight for _, weight in self._scorers) or 1.0
        best, best_score = survivors[0], -1.0
        for cand in survivors:  # nodes in name order: the first of equals wins
            score = 0.0
            for scorer, weight in self._scorers:
                cand.notes[scorer.name] = value = scorer.score(ctx, cand)
                score += weight * value
            score /= total_weight
            if score > best_score:
                best, best_score = cand, score
        log.debug("model %s: scores %s", spec.name, {c.node.node_id: c.notes for c in survivors})
        return Placed(best.node.node_id, best.n_gpu_layers, round(best_score, 4))

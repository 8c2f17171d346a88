"""The autoscaler: once a second, every autoscaled model's demand → its replica count (docs/AUTOSCALING.md).

Runs only where the control plane acts (the leader, in Kubernetes): one decider per cluster, so two
gateways never fight over a count. It reads the gateways' demand reports (controlplane/state/demand.py),
asks each model's ModelScaler (decider.py) and writes the count to ``ClusterState.scaling``, which the
reconciler follows; the operator keeps that in the Model's status, where a new leader finds it.
External mode only publishes the demand: an HPA or KEDA owns ``spec.replicas``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from controlplane.autoscaler.decider import ModelScaler
from controlplane.domain import ModelSpec, ScaleStatus
from controlplane.metrics import ControlPlaneMetrics
from controlplane.state.cluster import ClusterState
from controlplane.state.demand import ModelLoad
from llamafleet.core.lifecycle import wait_any

log = logging.getLogger(__name__)


class Autoscaler:
    def __init__(self, state: ClusterState, metrics: ControlPlaneMetrics, tick_s: float = 1.0) -> None:
        self._state = state
        self._metrics = metrics
        self._tick_s = tick_s
        self._scalers: dict[str, ModelScaler] = {}
        self._seen_request: dict[str, float] = {}  # the latest last_request_unix per model

    async def run(self, stop: asyncio.Event) -> None:
        urgent = self._state.demand.urgent
        while not stop.is_set():
            urgent.clear()
            if self._state.settled:  # a new leader first takes over what runs (adoption)
                self.tick(time.monotonic(), time.time())
            await wait_any([stop, urgent], self._tick_s)

    def tick(self, now: float, wall: float) -> None:
        state = self._state
        for name in [m for m in self._scalers if m not in state.models or not _internal(state.models[m])]:
            del self._scalers[name]
        for name, spec in state.models.items():
            load = state.demand.load(name, now)
            if spec.autoscaling is None:
                continue
            if spec.autoscaling.mode == "External":
                why = "External: spec.replicas belongs to its owner (an HPA or KEDA)"
                state.set_scale(name, ScaleStatus(spec.replicas, why, demand=load.demand if load else 0.0))
                continue
            self._decide(name, spec, now, wall, load)

    def _decide(self, name: str, spec: ModelSpec, now: float, wall: float, load: ModelLoad | None) -> None:
        state = self._state
        auto = spec.autoscaling
        assert auto is not None
        before = state.scaling.get(name)
        current = state.target_replicas(spec)
        scaler = self._scalers.get(name)
        if scaler is None:
            # A new leader carries on from the persisted status: the idle clock keeps running.
            last = before.last_request_unix if before else 0.0
            scaler = self._scalers[name] = ModelScaler(
                auto, spec.parallel_slots, now, now - (wall - last) if last else 0.0
            )
        scaler.reconfigure(auto, spec.parallel_slots)
        if load is None:
            reason = f"no gateway reports demand: holding {current}"
            state.set_scale(name, _carry(before, current, reason))
            return
        requested = load.last_request_unix > self._seen_request.get(name, 0.0)
        self._seen_request[name] = max(self._seen_request.get(name, 0.0), load.last_request_unix)
        decision = scaler.decide(now, current, load.demand, requested)
        last_request = wall - (now - scaler.last_request) if scaler.last_request else 0.0
        changed = decision.replicas != current
        status = ScaleStatus(
            decision.replicas,
            decision.reason,
            decision.panic,
            load.demand,
            wall if changed else (before.changed_unix if before else 0.0),
            last_request,
        )
        if changed:
            direction = "up" if decision.replicas > current else "down"
            self._metrics.scale_events.labels(name, direction).inc()
            log.info("model %s: scaling %s from %d to %d replica(s): %s", name, direction, current,
                     decision.replicas, decision.reason)  # fmt: skip
        state.set_scale(name, status)


def _internal(spec: ModelSpec) -> bool:
    return spec.autoscaling is not None and spec.autoscaling.mode == "Internal"


def _carry(before: ScaleStatus | None, replicas: int, reason: str) -> ScaleStatus:
    if before is None:
        return ScaleStatus(replicas, reason)
    return ScaleStatus(
        replicas, reason, before.panic, before.demand, before.changed_unix, before.last_request_unix
    )

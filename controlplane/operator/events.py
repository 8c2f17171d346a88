"""Kubernetes Events on Model objects, so `kubectl describe model` tells the story.

Events are derived by comparing what each replica looked like at the last pass with now: a
replica placed, adopted, ready, restarted, failed; a model that cannot be placed (once per
distinct reason), a rejected spec, a name conflict. The same event for the same object is
not repeated within ``dedupe_s`` (client-go aggregates similar events the same way).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from controlplane.domain import ReplicaPhase, ReplicaRecord
from controlplane.operator import resource

log = logging.getLogger(__name__)

Obj = dict[str, Any]
COMPONENT = "llamafleet-controlplane"


@dataclass(frozen=True)
class ModelEvent:
    namespace: str
    name: str
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class ReplicaSeen:
    node: str | None
    phase: ReplicaPhase
    restarts: int
    replacements: int = 0


def replica_events(
    namespace: str, name: str, before: dict[str, ReplicaSeen] | None, replicas: tuple[ReplicaRecord, ...]
) -> list[ModelEvent]:
    """What happened to a model's replicas since ``before`` (None: nothing seen yet)."""
    events: list[ModelEvent] = []

    def add(kind: str, reason: str, message: str) -> None:
        events.append(ModelEvent(namespace, name, kind, reason, message))

    for r in replicas:
        old = (before or {}).get(r.replica_id)
        if old is None and r.adopted:
            message = f"replica {r.replica_id} keeps running on node {r.node_id} ({r.phase.value})"
            add("Normal", "Adopted", f"{message}: taken over without a restart")
            continue
        if r.node_id and (old is None or old.node != r.node_id):
            add("Normal", "Placed", f"replica {r.replica_id} placed {_where(r)}")
        if r.phase == ReplicaPhase.READY and (old is None or old.phase != ReplicaPhase.READY):
            add("Normal", "ReplicaReady", f"replica {r.replica_id} on node {r.node_id} is serving")
        if old is not None and r.restarts > old.restarts:
            add(
                "Warning",
                "EngineRestarted",
                f"replica {r.replica_id} on node {r.node_id} restarted ({r.restarts} so far): {r.message}",
            )
        if old is not None and r.replacements > old.replacements:
            add("Warning", "SplitPlacedAgain",
                f"replica {r.replica_id}'s layer split was taken down and placed again "
                f"({r.replacements} so far): {r.last_failure}")  # fmt: skip
        if r.phase == ReplicaPhase.FAILED and (old is None or old.phase != ReplicaPhase.FAILED):
            add(
                "Warning",
                "ReplicaFailed",
                f"replica {r.replica_id} on node {r.node_id}: {r.message or r.error}",
            )
    return events


def _where(r: ReplicaRecord) -> str:
    if not r.parts or r.head_layers is None:
        return f"on node {r.node_id} with {r.n_gpu_layers} GPU layers"
    workers = ", ".join(f"layers {p.first_layer}-{p.last_layer} on {p.node_id}" for p in r.parts)
    first, last = r.head_layers
    head = f"layers {first}-{last} and the output on {r.node_id} (head)"
    return f"as a layer split: {workers} (RPC workers), {head}"


def snapshot(replicas: tuple[ReplicaRecord, ...]) -> dict[str, ReplicaSeen]:
    return {r.replica_id: ReplicaSeen(r.node_id, r.phase, r.restarts, r.replacements) for r in replicas}


def event_body(event: ModelEvent, obj: Obj, instance: str, now: str) -> Obj:
    meta = obj["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{event.name}.", "namespace": event.namespace},
        "involvedObject": {
            "apiVersion": resource.API_VERSION,
            "kind": resource.KIND,
            "name": event.name,
            "namespace": event.namespace,
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": event.reason,
        "message": event.message[:1024],
        "type": event.type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class Deduper:
    def __init__(self, dedupe_s: float = 600.0) -> None:
        self._dedupe_s = dedupe_s
        self._sent: dict[ModelEvent, float] = {}

    def fresh(self, event: ModelEvent) -> bool:
        now = time.monotonic()
        if now - self._sent.get(event, -self._dedupe_s) < self._dedupe_s:
            return False
        self._sent[event] = now
        if len(self._sent) > 10_000:
            self._sent = {e: t for e, t in self._sent.items() if now - t < self._dedupe_s}
        return True

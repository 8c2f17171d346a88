"""Rolling updates: a model whose engine parameters change gets new replicas beside the old ones,
traffic moves as they become ready, and the old ones are drained and stopped only then. Draining a
node (`llamafleet nodes drain NODE`) is the same operation for the replicas on it.

Per model, on every reconcile: outdated replicas that serve nothing go at once; new replicas are
added up to the desired count with at most ``MAX_SURGE`` extra replicas in all; an outdated ready
replica is retired only while more replicas are ready than desired (none unavailable). When the
surge cannot be placed (no memory for one more copy), one outdated replica is retired first to make
room: one at a time. A rollback is the same operation towards the older spec. Retired replicas are
unassigned: their agents report them stopping, drain them and stop them (docs/RELIABILITY.md).
"""

from __future__ import annotations

import logging
import uuid

from controlplane.domain import ModelSpec, ReplicaPhase, ReplicaRecord, needs_new_replicas
from controlplane.state.cluster import ClusterState

log = logging.getLogger(__name__)

MAX_SURGE = 1


def new_replica(state: ClusterState, spec: ModelSpec, why: str) -> ReplicaRecord:
    replica_id = f"{spec.name}-{uuid.uuid4().hex[:6]}"
    replica = state.add_replica(ReplicaRecord(replica_id, spec.name, spec))
    log.info("model %s: new replica %s (%s)", spec.name, replica_id, why)
    return replica


def on_cordoned_node(state: ClusterState, replica: ReplicaRecord) -> bool:
    """Whether the replica (or a part of its split) runs on a node being drained (on request, or by a
    drain taint on its Kubernetes Node)."""
    nodes = [replica.node_id, *(p.node_id for p in replica.parts)]
    return any(n in state.nodes and state.nodes[n].moving_away for n in nodes if n)


def roll(state: ClusterState, spec: ModelSpec, mine: list[ReplicaRecord], target: int) -> bool:
    """Advance the model's rollout towards ``target`` replicas one step; False when every replica
    already runs ``spec``."""
    outdated = [r for r in mine if needs_new_replicas(r.spec, spec) or on_cordoned_node(state, r)]
    current = [r for r in mine if r not in outdated]
    for replica in current:
        if replica.spec != spec:  # replicas, placement or balancer: nothing to restart
            replica.spec = spec
            state.bump()
    if not outdated:
        return False
    for replica in [r for r in outdated if r.phase != ReplicaPhase.READY]:
        log.info("model %s changed: removing replica %s, which serves nothing", spec.name, replica.replica_id)
        state.unbind(replica.replica_id, remove=True)
        outdated.remove(replica)
    while len(current) < target and len(current) + len(outdated) < target + MAX_SURGE:
        current.append(new_replica(state, spec, "rolling update"))
    ready = sum(1 for r in [*current, *outdated] if r.phase == ReplicaPhase.READY)
    blocked = any(r.node_id is None for r in current) and spec.name in state.pending_reasons
    allowed = target - (1 if blocked else 0)  # no room for a surge: one at a time
    while outdated and ready > allowed:
        replica = outdated.pop(0)
        log.info("model %s: %d replica(s) ready with the new spec; draining old replica %s%s", spec.name,
                 sum(1 for r in current if r.phase == ReplicaPhase.READY), replica.replica_id,
                 " to make room" if blocked else "")  # fmt: skip
        state.unbind(replica.replica_id, remove=True)
        ready -= 1
    return True

"""Drives actual state toward desired state: creates, places, re-places and removes replicas.

Runs on every state change (and on a timer, for grace periods). Each decision is logged as an
event with its reason; reasons for pending replicas are kept for the model's status.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from controlplane.domain import ReplicaPhase, ReplicaRecord, WorkerPart
from controlplane.rollout import new_replica, roll
from controlplane.scheduler.placement import Placed, Placer, Unplaceable
from controlplane.scheduler.split import SplitPlan, on_gpu
from controlplane.state.cluster import ClusterState

log = logging.getLogger(__name__)

# Engine failures worth another node; a bad or missing file fails the same way everywhere.
RETRY_ELSEWHERE = ("engine_crashed", "engine_start_failed", "disk_full")  # another node may have room
# Placed again on a node where it failed (nowhere else fits) only after a pause that doubles with
# each failure: a full disk or a crashing engine is not retried once a second.
RETRY_FIRST_S = 2.0
RETRY_MAX_S = 60.0


class Reconciler:
    def __init__(self, state: ClusterState, placer: Placer, node_grace_s: float, tick_s: float = 1.0) -> None:
        self._state = state
        self._placer = placer
        self._node_grace_s = node_grace_s
        self._tick_s = tick_s

    async def run(self, stop: asyncio.Event) -> None:
        seen = -1
        settled = False
        while not stop.is_set():
            if self._state.version != seen or self._state.settled != settled or self._retry_due():
                settled = self._state.settled
                self.reconcile()
                seen = self._state.version
            waiter = asyncio.ensure_future(self._state.wait_changed(seen, self._tick_s))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            self._expire_lost_nodes()

    def reconcile(self) -> None:
        state = self._state
        # Replicas of models that are gone; a changed spec rolls out (controlplane/rollout.py).
        for replica in list(state.replicas.values()):
            if replica.model not in state.models:
                log.info("model %s removed: removing replica %s", replica.model, replica.replica_id)
                state.unbind(replica.replica_id, remove=True)
        by_model: dict[str, list[ReplicaRecord]] = {}
        for replica in state.replicas.values():
            by_model.setdefault(replica.model, []).append(replica)
        for name, spec in state.models.items():
            mine = by_model.get(name, [])
            target = state.target_replicas(spec)  # the autoscaler's count, or the spec's
            if roll(state, spec, mine, target):
                continue  # the rollout decides the count until it is done
            for _ in range(target - len(mine)):
                new_replica(state, spec, "scaled up" if mine else "new model")
            surplus = len(mine) - target
            if surplus > 0:
                # Drop the least useful first: unplaced, then not ready.
                ranked = sorted(mine, key=lambda r: (r.node_id is not None, r.phase == ReplicaPhase.READY))
                for replica in ranked[:surplus]:
                    log.info("model %s scaled down: removing replica %s", name, replica.replica_id)
                    state.unbind(replica.replica_id, remove=True)
        self._replace_failed()
        self._take_down_broken_splits()
        if state.settled:  # before: agents may still bring back replicas to adopt
            self._place_pending()

    def _retry_due(self) -> bool:
        now = time.monotonic()
        return any(r.node_id is None and 0 < r.retry_at <= now for r in self._state.replicas.values())

    def _replace_failed(self) -> None:
        """A replica whose engine failed for good on a node is placed again, on another node if one fits."""
        for replica in list(self._state.replicas.values()):
            if replica.phase == ReplicaPhase.READY and replica.failed_on:
                replica.failed_on, replica.retry_at = (), 0.0  # it serves: the next failure starts afresh
            if (
                replica.phase != ReplicaPhase.FAILED
                or replica.error not in RETRY_ELSEWHERE
                or not replica.node_id
            ):
                continue
            log.warning(
                "replica %s of %s failed on node %s (%s): placing it again, avoiding that node",
                replica.replica_id, replica.model, replica.node_id, replica.message or replica.error,
            )  # fmt: skip
            replica.failed_on = (*replica.failed_on, replica.node_id)
            pause = min(RETRY_FIRST_S * 2 ** (len(replica.failed_on) - 1), RETRY_MAX_S)
            replica.retry_at = time.monotonic() + pause
            self._state.unbind(replica.replica_id)

    def _take_down_broken_splits(self) -> None:
        """A split serves only while every part does: when its head or a worker fails, crashes, or its
        node goes away, the whole split is stopped and placed again (the same nodes or others).

        llama.cpp cannot swap a worker under a loaded model, and a head whose worker died has already
        exited (aborted, or its decode watchdog fired: docs/SPLIT.md), so nothing is kept.
        """
        broken_phases = (ReplicaPhase.RESTARTING, ReplicaPhase.FAILED)
        for replica in list(self._state.replicas.values()):
            if not replica.parts or replica.node_id is None:
                continue
            why = ""
            nodes = [replica.node_id, *(p.node_id for p in replica.parts)]
            lost = [n for n in nodes if not (n in self._state.nodes and self._state.nodes[n].connected)]
            worker = next((p for p in replica.parts if p.phase in broken_phases), None)
            if lost:
                why = f"node {lost[0]} disconnected"
            elif worker is not None:
                why = f"RPC worker on {worker.node_id}: {worker.message or worker.phase.value}"
            elif replica.phase in broken_phases:
                why = f"head on {replica.node_id}: {replica.message or replica.phase.value}"
            if not why:
                continue
            log.warning("split replica %s of %s is broken (%s): stopping every part and placing it again",
                        replica.replica_id, replica.model, why)  # fmt: skip
            replica.last_failure = why
            replica.replacements += 1
            self._state.unbind(replica.replica_id)

    def _place_pending(self) -> None:
        state = self._state
        pending = [r for r in state.replicas.values() if r.node_id is None]
        batch = [r for r in pending if not r.failed_on]
        decisions = self._placer.place_many(
            [r.spec for r in batch], state.nodes.values(), state.replicas.values()
        )
        split_done = False  # one split per pass: the next pass plans with its memory reserved
        for replica, decision in zip(batch, decisions, strict=True):
            if isinstance(decision, Unplaceable) and decision.split_plan and replica.spec.allow_split:
                if not split_done:
                    self._split(replica, decision.split_plan)
                split_done = True
                continue
            self._apply(replica, decision)
        for replica in [r for r in pending if r.failed_on]:  # avoid the nodes where its engine failed
            nodes = [n for n in state.nodes.values() if n.node_id not in replica.failed_on]
            if not any(n.connected for n in nodes):
                if time.monotonic() < replica.retry_at:
                    continue  # nowhere else to go: the failed nodes again, after the pause
                nodes = list(state.nodes.values())
            self._apply(replica, self._placer.place(replica.spec, nodes, state.replicas.values()))

    def _split(self, replica: ReplicaRecord, plan: SplitPlan) -> None:
        state = self._state
        *workers, head = plan.parts
        log.info("placed replica %s of %s as a layer split: %s", replica.replica_id, replica.model,
                 plan.describe())  # fmt: skip
        state.clear_pending(replica.model)
        parts = [
            # New ids every time: a report about the last placement's workers never counts for these.
            WorkerPart(
                f"{replica.replica_id}-rpc{i}-{uuid.uuid4().hex[:4]}",
                p.node_id,
                p.first_layer,
                p.last_layer,
                p.bytes,
                gpu=on_gpu(p, state.nodes[p.node_id].gpus),
            )
            for i, p in enumerate(workers)
        ]
        head_layers = (head.first_layer, head.last_layer)
        head_gpu = on_gpu(head, state.nodes[plan.head].gpus)
        state.bind_split(replica.replica_id, plan.head, head_layers, head.bytes, parts, head_gpu)

    def _apply(self, replica: ReplicaRecord, decision: Placed | Unplaceable) -> None:
        state = self._state
        if isinstance(decision, Placed):
            log.info(
                "placed replica %s of %s on node %s with %d GPU layers (score %.3f)",
                replica.replica_id, replica.model, decision.node_id, decision.n_gpu_layers, decision.score,
            )  # fmt: skip
            state.clear_pending(replica.model)
            state.bind(replica.replica_id, decision.node_id, decision.n_gpu_layers, decision.host_bytes)
            return
        plan = decision.split_plan.describe() if decision.split_plan else ""
        known = (state.pending_reasons.get(replica.model), state.split_plans.get(replica.model, ""))
        if known != (decision.reasons, plan):
            detail = "; ".join(f"{n}: {why}" for n, why in sorted(decision.reasons.items())) or "no nodes"
            log.warning("replica %s of %s pending: %s%s", replica.replica_id, replica.model, detail,
                        f"; {plan}" if plan else "")  # fmt: skip
            state.set_pending(replica.model, decision.reasons, plan)

    def _expire_lost_nodes(self) -> None:
        """A node gone longer than the grace period loses its replicas; they are placed again."""
        now = time.monotonic()
        for node in self._state.nodes.values():
            if (
                node.connected
                or node.disconnected_at is None
                or now - node.disconnected_at < self._node_grace_s
            ):
                continue
            lost = [r for r in self._state.replicas.values() if r.node_id == node.node_id]
            if lost:
                log.warning(
                    "node %s lost for %.0fs: re-placing %d replica(s)",
                    node.node_id,
                    self._node_grace_s,
                    len(lost),
                )
            for replica in lost:
                self._state.unbind(replica.replica_id)

"""ClusterState: the single source of truth of the control plane, mutated only on its event loop.

Writers are the agent streams (node facts), the desired-state sources (models) and the
reconciler (placements). Every mutation bumps ``version`` and wakes the waiters, which read
snapshots: the routing table, per-node assignments, status views.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType

from controlplane.domain import (
    ModelSpec,
    NodeHello,
    NodeRecord,
    NodeStatus,
    ReplicaPhase,
    ReplicaRecord,
    ReplicaReport,
    ScaleStatus,
    WorkerPart,
    serves,
)
from controlplane.state.demand import DemandBook
from controlplane.state.node_addresses import EndpointRefused, checked_endpoint
from llamafleet.contract.replica import RemotePart

log = logging.getLogger(__name__)

COLD_START_MARGIN = 1.5  # held requests wait at least this many measured cold starts

ENDED = -1  # a node's session after end_session(): its stream must close
_sessions = itertools.count(1)


class ClusterState:
    def __init__(
        self,
        settle_s: float = 15.0,
        engine_ports: tuple[int, int] | None = None,
        rpc_ports: tuple[int, int] | None = None,
    ) -> None:
        self.nodes: dict[str, NodeRecord] = {}
        # Where nodes' engines and RPC gates may listen: a reported endpoint is rebuilt from its node's
        # address and must use a port in these (None: any port) (controlplane/state/node_addresses.py).
        self.engine_ports = engine_ports
        self.rpc_ports = rpc_ports
        self._refused: set[tuple[str, str]] = set()  # (replica, endpoint) refusals already logged
        self.models: dict[str, ModelSpec] = {}
        self.models_error: str = ""
        self.replicas: dict[str, ReplicaRecord] = {}
        self._pending_reasons: dict[str, dict[str, str]] = {}  # model → node → why not there
        self._split_plans: dict[str, str] = {}  # model → the layer split that would fit, described
        self.sources: tuple[str, ...] = ()  # every desired model's source
        self.sources_version = 0
        self.created: dict[str, int] = {}
        self.version = 0
        self._changed = asyncio.Event()
        # Adoption: a control plane that starts (a restart, a new leader) first takes over the replicas
        # agents already run. Nothing is placed, unassigned or published as final until it has the
        # desired state and the agents had their chance to reconnect (docs/KUBERNETES.md, failover).
        self.desired_synced = False  # a desired-state source has delivered a complete set of models
        self.expected_nodes: frozenset[str] = frozenset()  # nodes the last leader placed replicas on
        self._settle_s = settle_s
        self._started = time.monotonic()
        # Autoscaling (controlplane/autoscaler): the gateways' demand reports, the count decided for
        # each autoscaled model (restored from a Model's status by a new leader), and each model's
        # last measured cold start (replica created → ready), which sets how long gateways hold requests.
        self.demand = DemandBook()
        self._scaling: dict[str, ScaleStatus] = {}
        self.cold_starts: dict[str, float] = {}
        self.cordoned_ids: set[str] = set()  # drained on request, as kept in the node keys' store

    # --- change notification -------------------------------------------------------------
    def bump(self) -> None:
        """Record a change: waiters wake up and re-read their snapshot."""
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, since: int, wait_s: float | None = None) -> int:
        """Wait until ``version`` moves past ``since`` (or ``wait_s``); returns the current version."""
        if self.version == since:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait_s)
        return self.version

    def start_settling(self) -> None:
        """The settle window starts when this process starts to act (a follower that waited an hour for
        the Lease must still give agents their chance to report before it publishes or places)."""
        self._started = time.monotonic()

    @property
    def settled(self) -> bool:
        """Agents had their chance to report what they run: placement and unassignment may start."""
        if not self.desired_synced:
            return False
        connected = {n.node_id for n in self.nodes.values() if n.connected}
        # With nothing known to wait for, the first agent is enough.
        everyone_back = self.expected_nodes <= connected if self.expected_nodes else bool(connected)
        return everyone_back or time.monotonic() - self._started >= self._settle_s

    # --- desired models ------------------------------------------------------------------
    def set_models(self, specs: Iterable[ModelSpec], error: str = "") -> None:
        """The complete desired set. With ``error``: the source is broken and these are the last good ones."""
        new = {spec.name: spec for spec in specs}
        if not error and not self.desired_synced:
            self.desired_synced = True
            self.bump()
        now = int(time.time())
        for name in new:
            self.created.setdefault(name, now)
        if new != self.models or error != self.models_error:
            self.models = new
            self.models_error = error
            sources = tuple(sorted({spec.source for spec in new.values()}))
            if sources != self.sources:  # agents are asked to report these files' headers
                self.sources = sources
                self.sources_version += 1
                for node in self.nodes.values():
                    node.models_reported = node.watched_version >= self.sources_version
            self.bump()
        self._adopt_all()

    def target_replicas(self, spec: ModelSpec) -> int:
        """How many replicas the model should have now: the autoscaler's count (Internal mode), else
        ``replicas`` (set by people, or by an HPA/KEDA in External mode)."""
        auto = spec.autoscaling
        if auto is None or auto.mode == "External":
            return spec.replicas
        decided = self._scaling.get(spec.name)
        if decided is not None:
            return min(max(decided.replicas, auto.min_replicas), auto.max_replicas)
        return min(max(spec.replicas, auto.min_replicas), auto.max_replicas)  # the starting count

    # --- read-only views (the state writes them; everyone else reads) ----------------------------
    @property
    def pending_reasons(self) -> Mapping[str, Mapping[str, str]]:
        """Model → node → why its pending replica is not placed there."""
        return MappingProxyType(self._pending_reasons)

    @property
    def split_plans(self) -> Mapping[str, str]:
        """Model → the layer split that would fit it, described."""
        return MappingProxyType(self._split_plans)

    @property
    def scaling(self) -> Mapping[str, ScaleStatus]:
        """Autoscaled model → the count decided and why."""
        return MappingProxyType(self._scaling)

    def set_pending(self, model: str, reasons: dict[str, str], split_plan: str) -> None:
        """Why ``model``'s replica waits (per node) and the split that would fit; wakes readers when new."""
        if (self._pending_reasons.get(model), self._split_plans.get(model, "")) == (reasons, split_plan):
            return
        self._pending_reasons[model] = reasons
        if split_plan:
            self._split_plans[model] = split_plan
        else:
            self._split_plans.pop(model, None)
        self.bump()

    def clear_pending(self, model: str) -> None:
        self._pending_reasons.pop(model, None)
        self._split_plans.pop(model, None)

    def add_replica(self, replica: ReplicaRecord) -> ReplicaRecord:
        self.replicas[replica.replica_id] = replica
        self.bump()
        return replica

    def restore_scale(self, model: str, status: ScaleStatus) -> None:
        """A count a previous leader decided (a Model's status), unless this one decided already."""
        if model not in self._scaling:
            self._scaling[model] = status

    def set_scale(self, model: str, status: ScaleStatus) -> None:
        """The autoscaler's decision; only a new count wakes the reconciler and the gateways."""
        before = self._scaling.get(model)
        self._scaling[model] = status
        if before is None or before.replicas != status.replicas:
            self.bump()

    # --- nodes ---------------------------------------------------------------------------
    def node_connected(self, hello: NodeHello) -> int:
        """Register a node's new stream; returns its session id (a newer stream supersedes older ones)."""
        node = self.nodes.get(hello.node_id) or NodeRecord(node_id=hello.node_id)
        node.hostname = hello.hostname
        node.advertise_host = hello.advertise_host
        node.labels = dict(hello.labels)
        node.cpu_model = hello.cpu_model
        node.cpu_logical_cores = hello.cpu_logical_cores
        node.cpu_usable = hello.cpu_usable
        node.cpu_summary = hello.cpu_summary
        node.ram_total_bytes = hello.ram_total_bytes
        node.ram_free_bytes = hello.ram_free_bytes
        node.devices = list(hello.devices)
        node.agent_version = hello.agent_version
        node.cached_models = dict(hello.cached_models)
        node.watched_version = 0  # a new stream: the agent has not answered this list yet
        node.models_reported = self.sources_version == 0
        node.cpu_flags = hello.cpu_flags
        node.gpus = hello.gpus
        node.nvml = hello.nvml
        node.connected = True
        node.disconnected_at = None
        node.deleted = False
        node.cordoned = node.cordoned or node.node_id in self.cordoned_ids  # kept across a failover
        node.session = next(_sessions)
        node.last_seen = time.time()
        self.nodes[node.node_id] = node
        self._apply_reports(node.node_id, hello.replicas)
        log.info("node %s connected (%s, usable CPUs %s)", node.node_id, node.cpu_model,
                 node.cpu_summary or node.cpu_logical_cores)  # fmt: skip
        self.bump()
        return node.session

    def node_status(self, node_id: str, session: int, status: NodeStatus) -> None:
        node = self.nodes.get(node_id)
        if node is None or node.session != session:
            return  # a superseded stream
        node.applied_generation = status.applied_generation
        node.ram_free_bytes = status.ram_free_bytes
        node.cached_models = dict(status.cached_models)
        node.watched_version = status.watched_version
        node.models_reported = status.watched_version >= self.sources_version
        node.gpus = tuple(
            replace(g, free_bytes=status.device_free.get(g.name, g.free_bytes)) for g in node.gpus
        )
        node.last_seen = time.time()
        self._apply_reports(node_id, status.replicas)
        self.bump()

    def node_disconnected(self, node_id: str, session: int) -> None:
        node = self.nodes.get(node_id)
        if node is None or node.session != session:
            return
        node.connected = False
        node.disconnected_at = time.monotonic()
        for replica in self.replicas.values():
            if replica.node_id == node_id and replica.phase == ReplicaPhase.READY:
                # Unknown until it is back: keep it out of the routing table meanwhile.
                replica.phase = ReplicaPhase.ASSIGNED
                replica.message = f"node {node_id} disconnected"
            for part in replica.parts:
                if part.node_id == node_id:
                    part.phase, part.message = ReplicaPhase.ASSIGNED, f"node {node_id} disconnected"
        log.warning("node %s disconnected", node_id)
        self.bump()

    def _apply_reports(self, node_id: str, reports: Iterable[ReplicaReport]) -> None:
        node = self.nodes[node_id]
        node.running = {r.replica_id: r for r in reports}
        node.threads = sum(r.threads for r in node.running.values())
        workers = {p.worker_id: p for r in self.replicas.values() for p in r.parts if p.node_id == node_id}
        for report in node.running.values():
            part = workers.get(report.replica_id)
            if part is not None:
                if part.phase != report.phase:
                    log.info("RPC worker %s on %s: %s → %s", part.worker_id, node_id, part.phase.value,
                             report.phase.value)  # fmt: skip
                part.phase, part.message = report.phase, report.message
                part.endpoint = self._endpoint(node, report.replica_id, report.endpoint, http=False)
                continue
            replica = self.replicas.get(report.replica_id)
            if replica is None and self._adopt(node_id, report):
                continue
            if replica is None or replica.node_id != node_id:
                continue  # not ours (any more): the agent stream unassigns it
            if replica.parts and (
                report.spec is None or report.spec.remote_parts != remote_parts_of(replica)
            ):
                continue  # a split's head from before it was placed again (or not started yet)
            if replica.phase != report.phase:
                log.info(
                    "replica %s on %s: %s → %s",
                    replica.replica_id,
                    node_id,
                    replica.phase.value,
                    report.phase.value,
                )
            if report.phase == ReplicaPhase.READY and not replica.served and not replica.adopted:
                self.cold_starts[replica.model] = time.monotonic() - replica.created_at
            replica.served = replica.served or report.phase == ReplicaPhase.READY
            replica.phase = report.phase
            replica.endpoint = self._endpoint(node, replica.replica_id, report.endpoint, http=True)
            replica.restarts = report.restarts
            replica.error = report.error
            replica.message = report.message
            replica.adapters = report.adapters
            replica.engine_secret = report.engine_secret
            replica.download = report.download
            replica.threads = report.threads

    def _endpoint(self, node: NodeRecord, replica_id: str, reported: str, *, http: bool) -> str:
        """The endpoint to use for a reported one: rebuilt on the node's address; "" when refused."""
        try:
            ports = self.engine_ports if http else self.rpc_ports
            return checked_endpoint(reported, node.advertise_host, ports, http=http)
        except EndpointRefused as exc:
            if (replica_id, reported) not in self._refused:
                self._refused.add((replica_id, reported))
                log.warning("node %s reported replica %s at %s; not routed", node.node_id, replica_id, exc)
            return ""

    def _adopt_all(self) -> None:
        for node in self.nodes.values():
            if node.connected:
                for report in node.running.values():
                    self._adopt(node.node_id, report)

    def _adopt(self, node_id: str, report: ReplicaReport) -> bool:
        """Take over a replica an agent runs when it serves a desired model as specified; True if taken."""
        if not self.desired_synced or report.spec is None or report.replica_id in self.replicas:
            return False
        spec = self.models.get(report.model)
        if spec is None or report.phase in (ReplicaPhase.FAILED, ReplicaPhase.STOPPING):
            return False
        if not serves(report.spec, spec):
            return False
        node = self.nodes[node_id]
        missing = {k: v for k, v in spec.node_selector.items() if node.labels.get(k) != v}
        if missing:  # placement would never have put it there: the node's labels do not match
            if (report.replica_id, "selector") not in self._refused:
                self._refused.add((report.replica_id, "selector"))
                log.warning("not adopting replica %s of %s on node %s: its labels do not match the "
                            "nodeSelector (%s)", report.replica_id, spec.name, node_id,
                            ", ".join(f"{k}={v}" for k, v in sorted(missing.items())))  # fmt: skip
            return False
        mine = [r for r in self.replicas.values() if r.model == spec.name]
        # Taking over (a restart, a new leader), an autoscaled model keeps every replica that runs, up to
        # its max: they carry its load now, and the autoscaler scales down from there after watching a
        # whole window. Once settled, a replica it removed that the agent still reports stays removed.
        autoscaled = spec.autoscaling is not None and spec.autoscaling.mode == "Internal" and not self.settled
        limit = (
            spec.autoscaling.max_replicas if autoscaled and spec.autoscaling else self.target_replicas(spec)
        )
        if sum(1 for r in mine if r.node_id) >= limit:
            return False
        spare = next((r for r in mine if r.node_id is None), None)
        if len(mine) >= self.target_replicas(spec) and spare is not None:
            del self.replicas[spare.replica_id]  # a pending replica made before the agent was back
        self.replicas[report.replica_id] = ReplicaRecord(
            report.replica_id, spec.name, spec, node_id=node_id, phase=report.phase,
            endpoint=self._endpoint(node, report.replica_id, report.endpoint, http=True),
            restarts=report.restarts, error=report.error, message=report.message,
            adapters=report.adapters, n_gpu_layers=report.spec.n_gpu_layers, adopted=True,
            engine_secret=report.engine_secret, threads=report.threads,
        )  # fmt: skip
        log.info("adopted replica %s of %s running on node %s (%s): no restart",
                 report.replica_id, spec.name, node_id, report.phase.value)  # fmt: skip
        running = sum(1 for r in self.replicas.values() if r.model == spec.name and r.node_id)
        if autoscaled and running > self.target_replicas(spec):
            self._scaling[spec.name] = ScaleStatus(running, f"adopted {running} running replica(s)")
        self.bump()
        return True

    def set_node_labels(self, node_id: str, labels: dict[str, str]) -> None:
        """New labels for a node (its Kubernetes Node was relabeled): placement uses them from now on."""
        node = self.nodes.get(node_id)
        if node is None or node.labels == labels:
            return
        log.info(
            "node %s labels: %s", node_id, ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"
        )
        node.labels = dict(labels)
        self.bump()

    def end_session(self, node_id: str) -> bool:
        """End a node's stream (an operator forgot its key): it counts as disconnected now, and its
        stream sees session ENDED and closes. False when it was not connected."""
        node = self.nodes.get(node_id)
        if node is None or not node.connected:
            return False
        self.node_disconnected(node_id, node.session)
        node.session = ENDED
        self.bump()
        return True

    def cordon(self, node_id: str, cordoned: bool) -> NodeRecord:
        """Drain a node (its replicas move elsewhere, each stopped once its replacement serves) or undo it."""
        node = self.nodes[node_id]
        if cordoned:
            self.cordoned_ids.add(node_id)
        else:
            self.cordoned_ids.discard(node_id)
        if node.cordoned != cordoned:
            node.cordoned = cordoned
            log.info("node %s %s", node_id, "cordoned: draining its replicas" if cordoned else "uncordoned")
            self.bump()
        return node

    def set_kube_node(self, node_id: str, unschedulable: bool, draining: str) -> None:
        """What its Kubernetes Node says: cordoned (no new placements), a drain taint (move away)."""
        node = self.nodes[node_id]
        if (node.unschedulable, node.draining) == (unschedulable, draining):
            return
        if draining and not node.draining:
            log.info(
                "node %s: its Kubernetes Node has the taint %s: moving its replicas away", node_id, draining
            )
        elif unschedulable != node.unschedulable:
            log.info(
                "node %s: its Kubernetes Node is %s", node_id, "cordoned" if unschedulable else "schedulable"
            )
        node.unschedulable, node.draining = unschedulable, draining
        self.bump()

    def node_deleted(self, node_id: str) -> None:
        """Its Kubernetes Node is gone: the node's stream ends and its replicas are placed again now,
        without the grace a disconnected node gets (it is not coming back)."""
        node = self.nodes.get(node_id)
        if node is None or node.deleted:
            return
        log.warning("node %s: its Kubernetes Node was deleted; placing its replicas again", node_id)
        node.deleted = True
        if node.connected:
            self.node_disconnected(node_id, node.session)
            node.session = ENDED
        node.disconnected_at = float("-inf")
        self.bump()

    # --- placements (the reconciler writes these) ----------------------------------------
    def bind(
        self, replica_id: str, node_id: str, n_gpu_layers: int = -1, reserved_host_bytes: int = 0
    ) -> None:
        replica = self.replicas[replica_id]
        replica.node_id = node_id
        replica.n_gpu_layers = n_gpu_layers
        replica.reserved_host_bytes = reserved_host_bytes
        replica.phase = ReplicaPhase.ASSIGNED
        if not replica.error:  # placed again after a failure: why it failed stays until it reports anew
            replica.message = ""
        self.nodes[node_id].desired_generation += 1
        self.bump()

    def bind_split(
        self,
        replica_id: str,
        head: str,
        head_layers: tuple[int, int],
        head_bytes: int,
        workers: list[WorkerPart],
        head_gpu: bool = False,
    ) -> None:
        """Place a replica as a layer split: RPC workers for the first ranges, the head for the last
        (on its GPU when ``head_gpu``: the head engine gets GPU layers, else none)."""
        replica = self.replicas[replica_id]
        replica.parts = workers
        replica.head_layers = head_layers
        for part in workers:
            self.nodes[part.node_id].desired_generation += 1
        self.bind(replica_id, head, -1 if head_gpu else 0, head_bytes)

    def unbind(self, replica_id: str, *, remove: bool = False) -> None:
        replica = self.replicas[replica_id]
        for node_id in {replica.node_id, *(p.node_id for p in replica.parts)}:
            if node_id in self.nodes:
                self.nodes[node_id].desired_generation += 1
        replica.parts = []
        replica.head_layers = None
        replica.node_id = None
        replica.phase = ReplicaPhase.PENDING
        replica.endpoint = ""
        if remove:
            del self.replicas[replica_id]
        self.bump()


def remote_parts_of(r: ReplicaRecord) -> tuple[RemotePart, ...]:
    """A split replica's worker parts as its head's spec names them."""
    return tuple(RemotePart(p.node_id, p.endpoint, p.first_layer, p.last_layer) for p in r.parts)

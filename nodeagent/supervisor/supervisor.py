"""The processes on this node: engines and RPC workers. Applies Assign/Unassign and owns their tasks."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from llamafleet.contract.replica import ReplicaSpec, Role
from llamafleet.core.threads import ThreadWant, share_threads
from nodeagent.cache.store import ModelStore
from nodeagent.domain import Phase, ReplicaState
from nodeagent.rpc.tunnel import NodeCredentials
from nodeagent.settings import SupervisorSettings
from nodeagent.supervisor.process import SupervisedProcess
from nodeagent.supervisor.replica import EngineReplica
from nodeagent.supervisor.rpc_worker import RpcWorker

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(
        self,
        settings: SupervisorSettings,
        on_change: Callable[[], None],
        on_restart: Callable[[str], None] = lambda _model: None,
        credentials: NodeCredentials | None = None,
        store: ModelStore | None = None,
        cpus: int = 1,
        gpus: bool = False,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._store = store
        self._notify = on_change
        self._cpus = cpus  # threads this node's engines share (nodeagent.hardware.cpus)
        self._gpus = gpus  # the node has a GPU llama.cpp can offload to
        self._on_restart = on_restart
        self._replicas: dict[str, SupervisedProcess] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._stopping = False

    def states(self) -> list[ReplicaState]:
        return [r.state for r in self._replicas.values()]

    def memory_to_come(self) -> int:
        """Host memory its processes may still take (engines' prompt caches not yet at their cap)."""
        return sum(r.memory_to_come() for r in self._replicas.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Own the replicas' tasks until ``stop``; then stop every engine before returning."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                await stop.wait()
            finally:
                self._stopping = True
                log.info("stopping %d engine(s) and RPC worker(s)", len(self._replicas))
                for replica in self._replicas.values():
                    replica.stop.set()
                self._group = None

    def assign(self, spec: ReplicaSpec, generation: int) -> None:
        """Run ``spec``. The same spec again keeps the running process; a changed spec replaces it."""
        current = self._replicas.get(spec.replica_id)
        if current is not None and current.spec == spec and not current.stop.is_set():
            current.set_generation(generation)
            return
        if current is not None:
            log.info("replica %s changed; replacing its %s", spec.replica_id, current.kind)
            self.unassign(spec.replica_id)
        if self._group is None and self._stopping:
            # Stopping engines frees memory: the control plane may place a pending replica here in the
            # moment before it sees the node go. The node is going away; whatever it runs next gets a
            # new Assign when it is back.
            log.info("not starting replica %s of %s: the agent is stopping", spec.replica_id, spec.model)
            return
        if self._group is None:
            raise RuntimeError("supervisor is not running")
        kind = RpcWorker if spec.role == Role.RPC_WORKER else EngineReplica
        replica = kind(
            spec,
            generation,
            self._settings,
            self._on_change,
            self._on_restart,
            self._credentials,
            self._store,
            self._gpus,
        )
        self._replicas[spec.replica_id] = replica
        task = self._group.create_task(replica.run(), name=f"replica-{spec.replica_id}")
        self._tasks[spec.replica_id] = task
        task.add_done_callback(functools.partial(self._forget, spec.replica_id, replica))
        self._on_change()

    def unassign(self, replica_id: str) -> None:
        replica = self._replicas.get(replica_id)
        if replica is not None:
            log.info("unassigning replica %s", replica_id)
            replica.stop.set()
            self._on_change()

    def _on_change(self) -> None:
        """A replica came, went or changed: share the node's CPUs again, then report."""
        self._share_cpus()
        self._notify()

    def _share_cpus(self) -> None:
        """Each replica's thread count: what its model asks for (or the agent's --supervisor-engine-threads),
        else an even share of the node's CPUs among the replicas left to the node. A running engine
        follows its new share at its next health check; a failed or stopping one holds none."""
        live = sorted(
            (r for r in self._replicas.values() if not r.stop.is_set() and r.state.phase != Phase.FAILED),
            key=lambda r: r.spec.replica_id,
        )
        wants = [ThreadWant(r.spec.n_threads or self._settings.engine_threads, r.gpu_mode) for r in live]
        for replica, threads in zip(live, share_threads(self._cpus, wants), strict=True):
            replica.threads = threads

    def _forget(self, replica_id: str, replica: SupervisedProcess, _task: object = None) -> None:
        if self._replicas.get(replica_id) is replica:
            del self._replicas[replica_id]
            self._tasks.pop(replica_id, None)
            self._on_change()

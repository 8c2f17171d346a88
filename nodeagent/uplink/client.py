"""Keeps the agent's stream to the control plane open: Hello, then Status on change or on a timer.

Every Assign/Unassign is applied to the supervisor as it arrives and acknowledged through
``applied_generation`` in the next Status. A dropped stream is normal: we reconnect with
exponential backoff and jitter, and the control plane re-sends the whole desired state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import grpc
import psutil

from llamafleet.core.errors import JoinRefused
from llamafleet.security.grpc_tls import open_channel
from nodeagent.domain import CachedModel, HostInventory, NodeReport
from nodeagent.metrics import AgentMetrics
from nodeagent.settings import AgentSettings
from nodeagent.supervisor.supervisor import Supervisor
from nodeagent.uplink import convert
from nodeagent.uplink.identity import NodeIdentity
from protos.gen.llamafleet.agent.v1 import agent_pb2 as pb
from protos.gen.llamafleet.agent.v1 import agent_pb2_grpc

log = logging.getLogger(__name__)


class Uplink:
    def __init__(
        self,
        settings: AgentSettings,
        inventory: HostInventory,
        supervisor: Supervisor,
        changed: asyncio.Event,
        metrics: AgentMetrics,
        cached_models: Callable[[], list[CachedModel]],
        available_memory: Callable[[], int] = lambda: int(psutil.virtual_memory().available),
        identity: NodeIdentity | None = None,
    ) -> None:
        self._settings = settings
        self._identity = identity  # None: plaintext to a control plane run with --insecure
        self._inventory = inventory
        self._supervisor = supervisor
        self._changed = changed
        self._metrics = metrics
        self._cached_models = cached_models
        self._available_memory = available_memory
        self.applied_generation = 0
        self.watched_sources: frozenset[str] = frozenset()  # models the cluster wants profiles of
        self.watched_version = 0
        self.prefetch: tuple[str, ...] = ()  # sources to fetch into the node cache ahead of any replica
        self.prefetch_sha256: dict[str, str] = {}  # the sha256 a prefetched source's Model declares
        self.prefetch_changed = asyncio.Event()
        self.connected = False  # a session with the control plane is open (the agent's readiness)

    def report(self) -> NodeReport:
        states = tuple(self._supervisor.states())
        for phase in ("starting", "ready", "restarting", "failed", "stopping"):
            self._metrics.replicas.labels(phase).set(sum(1 for s in states if s.phase.value == phase))
        return NodeReport(
            applied_generation=self.applied_generation,
            ram_free_bytes=self._available_memory(),
            replicas=states,
            cached_models=tuple(self._cached_models()),
            watched_version=self.watched_version,
        )

    async def run(self, stop: asyncio.Event) -> None:
        address = self._settings.uplink.controlplane
        initial = self._settings.uplink.reconnect_backoff_initial_s
        backoff = initial
        while not stop.is_set():
            opened = time.monotonic()
            try:
                await self._session(stop)
            # The stream's reader and writer run in a TaskGroup: a lost control plane (killed, failed
            # over) arrives as an exception group, and must end only this session, never the agent.
            except* grpc.aio.AioRpcError as group:
                exc = group.exceptions[0]
                assert isinstance(exc, grpc.aio.AioRpcError)
                log.warning("control plane at %s: %s (%s)", address, exc.code().name, exc.details())
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and self._identity is not None:
                    self._identity.discard()  # its key is no longer this node's: join again
            except* (ConnectionError, asyncio.InvalidStateError) as group:  # the call ended under a write
                log.warning("control plane at %s: %s", address, group.exceptions[0] or "stream ended")
            finally:
                self.connected = False
                self._metrics.connected.set(0)
            if stop.is_set():
                break
            if time.monotonic() - opened > 30:
                backoff = initial  # a long-lived session ended: start over
            delay = backoff * random.uniform(0.8, 1.2)
            log.info("reconnecting to the control plane at %s in %.1fs", address, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            backoff = min(backoff * 2, self._settings.uplink.reconnect_backoff_max_s)

    async def _session(self, stop: asyncio.Event) -> None:
        settings = self._settings
        if self._identity is not None:
            await self._identity.ensure()
        tls = self._identity.tls() if self._identity is not None else None
        async with open_channel(settings.uplink.controlplane, tls) as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
            await call.write(
                convert.hello(
                    settings.node_id,
                    settings.label_map(),
                    settings.supervisor.advertise_host,
                    self._inventory,
                    self.report(),
                )
            )
            first = await call.read()
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                raise ConnectionError("control plane closed the stream before Welcome")
            interval = (first.welcome.status_interval_ms / 1000) or settings.uplink.status_interval_s
            log.info(
                "connected to the control plane at %s as node %r",
                settings.uplink.controlplane,
                settings.node_id,
            )
            self.connected = True
            self._metrics.connected.set(1)
            self._metrics.reconnects.inc()
            ended = asyncio.Event()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(call, ended), name="uplink-read")
                group.create_task(self._write(call, stop, ended, interval), name="uplink-write")
                if self._identity is not None:
                    group.create_task(self._renew(self._identity, channel, ended), name="uplink-renew")
            if not stop.is_set():
                raise ConnectionError("control plane ended the stream")

    @staticmethod
    async def _renew(identity: NodeIdentity, channel: grpc.aio.Channel, ended: asyncio.Event) -> None:
        """Renew the certificate when it is due, on this stream's channel; the stream goes on and the
        next connection presents the new one."""
        while not ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), max(0.0, min(identity.renew_due(), 3600.0)))
            if ended.is_set() or identity.renew_due() > 0:
                continue
            try:
                await identity.renew(channel)
                if identity.renew_due() <= 0:  # the CA itself expires sooner: no use asking again now
                    log.warning("the renewed certificate is already due again (the CA expires soon?)")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ended.wait(), 3600)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "could not renew this node's certificate (%s); trying again in a minute", exc.details()
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), 60)
            except JoinRefused as exc:  # a supplied, read-only folder: its supplier rotates it
                log.warning("%s; not renewing (whoever supplies the folder rotates it)", exc.message)
                return

    async def _read(self, call: grpc.aio.StreamStreamCall, ended: asyncio.Event) -> None:
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                self._apply(message)
        finally:
            ended.set()

    def _apply(self, message: pb.ControlMessage) -> None:
        kind = message.WhichOneof("body")
        if kind == "assign":
            spec = convert.replica_spec(message.assign.replica)
            self._supervisor.assign(spec, message.assign.generation)
            self.applied_generation = max(self.applied_generation, message.assign.generation)
        elif kind == "unassign":
            self._supervisor.unassign(message.unassign.replica_id)
            self.applied_generation = max(self.applied_generation, message.unassign.generation)
        elif kind == "watch_models":
            self.watched_sources = frozenset(message.watch_models.sources)
            self.watched_version = message.watch_models.version
            self.prefetch = tuple(message.watch_models.prefetch)
            self.prefetch_sha256 = dict(message.watch_models.prefetch_sha256)
            self.prefetch_changed.set()
        else:
            log.warning("ignoring unexpected control message %r", kind)
        self._changed.set()

    async def _write(
        self, call: grpc.aio.StreamStreamCall, stop: asyncio.Event, ended: asyncio.Event, interval: float
    ) -> None:
        while True:
            self._changed.clear()
            await call.write(convert.status(self.report()))
            waiters = {asyncio.ensure_future(e.wait()) for e in (self._changed, stop, ended)}
            try:
                await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if ended.is_set():
                return
            if stop.is_set():
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await call.write(convert.status(self.report()))
                    await call.done_writing()
                return

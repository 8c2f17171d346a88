"""AgentService: one stream per node agent. Registers the node, relays Status, pushes Assign/Unassign."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import grpc

from controlplane.agents import convert
from controlplane.agents.join import KEY_REFUSED, Issuer, peer_key, renew
from controlplane.state import views
from controlplane.state.cluster import ENDED, ClusterState
from controlplane.state.node_addresses import NodeFacts, NodeRefused, PeerFacts
from controlplane.state.node_keys import NodePins
from llamafleet import __version__
from llamafleet.contract.replica import ReplicaSpec
from llamafleet.core.errors import LlamafleetError
from llamafleet.security.grpc_tls import authorize
from protos.gen.llamafleet.agent.v1 import agent_pb2 as pb
from protos.gen.llamafleet.agent.v1 import agent_pb2_grpc

log = logging.getLogger(__name__)


class _Stopping(Exception):
    """Raised inside the stream's task group: this control plane is stopping (abort with UNAVAILABLE)."""


class _Forgotten(Exception):
    """The node's key was forgotten while its stream was open."""


STOPPING = "the control plane is stopping; connect to the next leader"


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        state: ClusterState,
        status_interval_s: float,
        issuer: Issuer | None = None,
        pins: NodePins | None = None,
        facts: NodeFacts | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._state = state
        self._stop = stop or asyncio.Event()  # set: this control plane stops; every stream ends at once
        self._facts = facts or PeerFacts(check=True)
        self._status_interval_s = status_interval_s
        self._issuer = issuer
        self._pins = pins

    async def Renew(  # noqa: N802 - the gRPC method name
        self, request: pb.RenewRequest, context: grpc.aio.ServicerContext
    ) -> pb.NodeCredential:
        if self._issuer is None or self._pins is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this control plane runs without TLS")
        assert self._issuer is not None
        assert self._pins is not None
        return await renew(self._issuer, self._pins, request, context)

    async def Connect(  # noqa: N802 - the gRPC method name
        self, request_iterator: object, context: grpc.aio.ServicerContext
    ) -> None:
        first = await context.read()
        if first is grpc.aio.EOF or not first.HasField("hello"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first message on the stream must be Hello"
            )
        if not first.hello.node_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Hello.node_id must not be empty")
        identity = await authorize(context, "node")
        if identity is not None and identity.name != first.hello.node_id:
            log.warning("refused a stream claiming node %s from %s (its certificate is for node %s)",
                        first.hello.node_id, context.peer(), identity.name)  # fmt: skip
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this certificate is for node {identity.name}, not {first.hello.node_id}",
            )
        if identity is not None and self._pins is not None:
            try:
                accepted = await self._pins.connects(identity.name, peer_key(context))
            except LlamafleetError as exc:
                log.error(
                    "node keys: %s; accepting node %s's certificate as it is", exc.message, identity.name
                )
                accepted = True
            if not accepted:
                log.warning("refused node %s from %s: its certificate's key is not the node's",
                            identity.name, context.peer())  # fmt: skip
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, KEY_REFUSED.format(node=identity.name))
        hello = convert.node_hello(first.hello)
        try:
            labels = await self._facts.verify(
                hello.node_id, hello.advertise_host, hello.labels, context.peer()
            )
        except NodeRefused as exc:
            if not exc.retry:
                log.warning("refused node %s from %s: %s", hello.node_id, context.peer(), exc.message)
            code = grpc.StatusCode.UNAVAILABLE if exc.retry else grpc.StatusCode.FAILED_PRECONDITION
            await context.abort(code, exc.message)
        hello = dataclasses.replace(hello, labels=labels)
        session = self._state.node_connected(hello)
        await context.write(convert.welcome(__version__, self._status_interval_s))
        # Replicas the agent already runs count as sent: if they are not desired, they get Unassign.
        sent: dict[str, ReplicaSpec | None] = {r.replica_id: None for r in hello.replicas}
        ended = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(context, hello.node_id, session, ended))
                group.create_task(self._push(context, hello.node_id, session, sent, ended))
        except* _Forgotten:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, KEY_REFUSED.format(node=hello.node_id))
        except* _Stopping:  # aborting inside the group would reach gRPC as an ExceptionGroup
            await context.abort(grpc.StatusCode.UNAVAILABLE, STOPPING)
        finally:
            self._state.node_disconnected(hello.node_id, session)

    async def _read(
        self, context: grpc.aio.ServicerContext, node_id: str, session: int, ended: asyncio.Event
    ) -> None:
        try:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    return
                if message.HasField("status"):
                    self._state.node_status(node_id, session, convert.node_status(message.status))
                else:
                    log.warning("node %s sent an unexpected %s", node_id, message.WhichOneof("body"))
        finally:
            ended.set()

    async def _push(
        self,
        context: grpc.aio.ServicerContext,
        node_id: str,
        session: int,
        sent: dict[str, ReplicaSpec | None],
        ended: asyncio.Event,
    ) -> None:
        """Send the difference between what the node should run and what it was last told."""
        seen = -1
        watched = -1
        prefetched: dict[str, str] = {}
        while not ended.is_set():
            if self._stop.is_set():  # now, not at the end of the server's grace: the agent reconnects
                raise _Stopping
            node = self._state.nodes.get(node_id)
            if node is not None and node.session == ENDED:
                raise _Forgotten  # an operator forgot this node's key: end its stream
            if node is None or node.session != session:
                return  # superseded by a newer stream from the same node
            prefetch = views.prefetch_for(self._state, node_id)
            if self._state.sources_version != watched or prefetch != prefetched:
                watched, prefetched = self._state.sources_version, prefetch
                await context.write(convert.watch_models(self._state.sources, watched, prefetch))
            generation, desired = views.assignments_for(self._state, node_id)
            # Until the state settles, replicas this node runs that nobody claimed yet may still be
            # adopted: unassign nothing before that (a new leader must never stop a serving engine).
            settled = self._state.settled
            for replica_id in [r for r in sent if r not in desired and settled]:
                await context.write(convert.unassign(generation, replica_id))
                del sent[replica_id]
            for replica_id, assignment in desired.items():
                if sent.get(replica_id) != assignment:
                    await context.write(convert.assign(generation, assignment))
                    sent[replica_id] = assignment
            seen = self._state.version
            waiter = asyncio.ensure_future(self._state.wait_changed(seen, None if settled else 1.0))
            ender = asyncio.ensure_future(ended.wait())
            stopper = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({waiter, ender, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for each in (waiter, ender, stopper):
                each.cancel()

"""ClusterClient: how gateways and the CLI read the control plane. Returns domain types only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from controlplane.api import convert
from controlplane.domain import ModelStatusView, NodeRecord, RoutingTable
from controlplane.state.demand import ModelLoad
from llamafleet.core.errors import InvalidRequest, ModelFileInvalid, NotFound, Unavailable
from llamafleet.security.grpc_tls import ClientTls, CredentialError, open_channel
from protos.gen.llamafleet.cluster.v1 import cluster_pb2 as pb
from protos.gen.llamafleet.cluster.v1 import cluster_pb2_grpc


class ClusterClient:
    """``tls``: this process's credential (gateway or admin); None for a control plane run --insecure.
    When its files change (a rotation) the next call opens a new channel; streams on the old one go on."""

    def __init__(self, address: str, tls: ClientTls | None = None, timeout_s: float = 5.0) -> None:
        self._address = address
        self._timeout_s = timeout_s
        self._tls = tls
        self._channels: list[grpc.aio.Channel] = []
        self._stamp: object = None
        self._current: cluster_pb2_grpc.ClusterServiceStub | None = None

    @property
    def _stub(self) -> cluster_pb2_grpc.ClusterServiceStub:
        stamp = self._tls.files.stamp() if self._tls is not None else None
        if self._current is None or stamp != self._stamp:
            try:
                channel = open_channel(self._address, self._tls)
            except CredentialError as exc:
                raise Unavailable(f"cannot reach the control plane: {exc}", retry_after=1) from None
            self._channels.append(channel)
            self._stamp, self._current = stamp, cluster_pb2_grpc.ClusterServiceStub(channel)
        return self._current

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def list_nodes(self) -> list[NodeRecord]:
        try:
            response = await self._stub.ListNodes(pb.ListNodesRequest(), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._unavailable(exc) from exc
        return [convert.node_from_pb(n) for n in response.nodes]

    async def forget_node(self, node_id: str) -> tuple[bool, bool]:
        """Clear ``node_id``'s key (admin): (a key was kept, its stream was open)."""
        try:
            answer = await self._stub.ForgetNode(
                pb.ForgetNodeRequest(node_id=node_id), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise InvalidRequest(exc.details() or "the control plane keeps no node keys") from exc
            raise self._unavailable(exc) from exc
        return answer.was_pinned, answer.was_connected

    async def cordon_node(self, node_id: str, cordoned: bool) -> NodeRecord:
        """Drain ``node_id`` (cordoned) or make it schedulable again; NotFound for an unknown node."""
        try:
            node = await self._stub.CordonNode(
                pb.CordonNodeRequest(node_id=node_id, cordoned=cordoned), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(exc.details() or f"no node {node_id!r}") from exc
            raise self._unavailable(exc) from exc
        return convert.node_from_pb(node)

    async def list_models(self) -> list[ModelStatusView]:
        try:
            response = await self._stub.ListModels(pb.ListModelsRequest(), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._unavailable(exc) from exc
        return [convert.model_from_pb(m) for m in response.models]

    async def evaluate_fit(
        self,
        model: str = "",
        source: str = "",
        node: str = "",
        context_length: int = 0,
        parallel: int = 0,
        kv_type: str = "",
    ) -> dict[str, Any]:
        """Every (or one) node's memory fit for a model: {"best_node", "nodes": [...]}."""
        request = pb.EvaluateFitRequest(model=model, source=source, node=node, context_length=context_length,
                                        parallel=parallel, kv_type=kv_type)  # fmt: skip
        try:
            response = await self._stub.EvaluateFit(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            errors = {
                grpc.StatusCode.NOT_FOUND: NotFound,
                grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
                grpc.StatusCode.FAILED_PRECONDITION: ModelFileInvalid,
            }
            kind = errors.get(exc.code())
            if kind is not None:
                raise kind(exc.details() or exc.code().name) from exc
            raise self._unavailable(exc) from exc
        return {
            "best_node": response.best_node or None,
            "nodes": [convert.node_fit_to_dict(n) for n in response.nodes],
        }

    async def watch_routes(self, gateway_id: str) -> AsyncIterator[RoutingTable]:
        """Yields the routing table on every change; raises Unavailable when the stream breaks."""
        try:
            async for message in self._stub.WatchRoutes(pb.WatchRoutesRequest(gateway_id=gateway_id)):
                yield convert.routing_table_from_pb(message)
        except grpc.aio.AioRpcError as exc:
            raise self._unavailable(exc) from exc

    async def report_load(self, gateway_id: str, loads: dict[str, ModelLoad]) -> None:
        """This gateway's load per model (the autoscaler's signal); raises Unavailable when it fails."""
        report = pb.LoadReport(
            gateway_id=gateway_id,
            models=[
                pb.ModelLoad(model=name, in_engines=x.in_engines, queued=x.queued,
                             last_request_unix=x.last_request_unix)
                for name, x in loads.items()
            ],
        )  # fmt: skip
        try:
            await self._stub.ReportLoad(report, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: grpc.aio.AioRpcError) -> Unavailable:
        hint = ""
        if exc.code() == grpc.StatusCode.UNAVAILABLE and self._tls is None:
            hint = "; a control plane with TLS (the default) needs a credential (--tls-dir), not --insecure"
        elif exc.code() == grpc.StatusCode.PERMISSION_DENIED:
            hint = "; give a credential for this role (llamafleet pki issue admin)"
        return Unavailable(
            f"control plane at {self._address}: {exc.code().name} ({exc.details()}){hint}", retry_after=1
        )

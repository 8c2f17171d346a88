"""ClusterService servicer: streams the routing table to gateways and answers the CLI's listings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from controlplane.api import convert
from controlplane.domain import RoutingTable
from controlplane.state.cluster import ClusterState
from protos.gen.llamafleet.cluster.v1 import cluster_pb2 as pb
from protos.gen.llamafleet.cluster.v1 import cluster_pb2_grpc


class ClusterServicer(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, state: ClusterState, stop: asyncio.Event) -> None:
        self._state = state
        self._stop = stop

    async def WatchRoutes(  # noqa: N802 - the gRPC method name
        self, request: pb.WatchRoutesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RoutingTable]:
        last: RoutingTable | None = None
        seen = -1
        while not self._stop.is_set():
            table = self._state.routing_table()
            if last is None or table.models != last.models:
                yield convert.routing_table_to_pb(table)
                last = table
            seen = self._state.version
            await self._state.wait_changed(seen, wait_s=1.0)

    async def ListNodes(  # noqa: N802
        self, request: pb.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListNodesResponse:
        counts: dict[str, int] = {}
        for replica in self._state.replicas.values():
            if replica.node_id:
                counts[replica.node_id] = counts.get(replica.node_id, 0) + 1
        nodes = sorted(self._state.nodes.values(), key=lambda n: n.node_id)
        return pb.ListNodesResponse(nodes=[convert.node_to_pb(n, counts.get(n.node_id, 0)) for n in nodes])

    async def ListModels(  # noqa: N802
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[convert.model_to_pb(v) for v in self._state.model_views()])

"""ClusterService servicer: streams the routing table to gateways and answers the CLI's listings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc

from controlplane.api import convert
from controlplane.domain import ModelRoute, ModelStatusView, ReplicaPhase, RoutingTable
from controlplane.scheduler.fit import context_params, model_recommendation, node_resources, profile_for
from controlplane.state import views
from controlplane.state.cluster import ClusterState
from controlplane.state.demand import ModelLoad
from controlplane.state.node_keys import NodePins
from llamafleet.core.errors import LlamafleetError
from llamafleet.fit.estimate import estimate
from llamafleet.fit.recommend import Recommendation, best_node, offload_for
from llamafleet.security import pki
from llamafleet.security.grpc_tls import authorize
from protos.gen.llamafleet.cluster.v1 import cluster_pb2 as pb
from protos.gen.llamafleet.cluster.v1 import cluster_pb2_grpc

log = logging.getLogger(__name__)

READERS = ("gateway", "admin")  # the routing table carries engine secrets: never to a node


class ClusterServicer(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, state: ClusterState, stop: asyncio.Event, pins: NodePins | None = None) -> None:
        self._state = state
        self._stop = stop
        self._pins = pins

    async def WatchRoutes(  # noqa: N802 - the gRPC method name
        self, request: pb.WatchRoutesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RoutingTable]:
        await authorize(context, *READERS)
        last: RoutingTable | None = None
        seen = -1
        while not self._stop.is_set():
            table = self._with_fit(views.routing_table(self._state))
            if last is None or table.models != last.models or table.settling != last.settling:
                yield convert.routing_table_to_pb(table)
                last = table
            seen = self._state.version
            await self._state.wait_changed(seen, wait_s=1.0)

    async def ReportLoad(  # noqa: N802
        self, request: pb.LoadReport, context: grpc.aio.ServicerContext
    ) -> pb.LoadReportAck:
        await authorize(context, "gateway")
        if not request.gateway_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a load report needs its gateway_id")
        loads = {m.model: ModelLoad(m.in_engines, m.queued, m.last_request_unix) for m in request.models}
        self._state.demand.report(request.gateway_id, loads)
        models = self._state.models
        if any(x.queued and name in models and self._state.target_replicas(models[name]) == 0
               for name, x in loads.items()):  # fmt: skip
            self._state.demand.urgent.set()  # requests wait for a model at zero
        return pb.LoadReportAck()

    async def ListNodes(  # noqa: N802
        self, request: pb.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListNodesResponse:
        await authorize(context, *READERS)
        counts: dict[str, int] = {}
        for replica in self._state.replicas.values():
            if replica.node_id:
                counts[replica.node_id] = counts.get(replica.node_id, 0) + 1
        nodes = sorted(self._state.nodes.values(), key=lambda n: n.node_id)
        return pb.ListNodesResponse(nodes=[convert.node_to_pb(n, counts.get(n.node_id, 0)) for n in nodes])

    async def CordonNode(  # noqa: N802
        self, request: pb.CordonNodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.Node:
        await authorize(context, "admin")
        if request.node_id not in self._state.nodes:
            known = ", ".join(sorted(self._state.nodes)) or "none"
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no node {request.node_id!r} (nodes: {known})")
        if self._pins is not None:  # kept where a new leader reads it, before it takes effect
            try:
                await self._pins.cordon(request.node_id, request.cordoned)
            except LlamafleetError as exc:
                why = f"cannot keep the drain of {request.node_id} where a failover finds it ({exc}); retry"
                await context.abort(grpc.StatusCode.UNAVAILABLE, why)
        node = self._state.cordon(request.node_id, request.cordoned)
        on_it = sum(1 for r in self._state.replicas.values() if r.node_id == node.node_id)
        return convert.node_to_pb(node, on_it)

    async def ForgetNode(  # noqa: N802
        self, request: pb.ForgetNodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ForgetNodeResponse:
        await authorize(context, "admin")
        if self._pins is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "this control plane runs without TLS: it keeps no node keys")  # fmt: skip
        assert self._pins is not None
        if not pki.NODE_ID.match(request.node_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{request.node_id[:64]!r} is not a node id"
            )
        try:
            was_pinned = await self._pins.forget(request.node_id)
        except LlamafleetError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot keep the change: {exc.message}")
        was_connected = self._state.end_session(request.node_id)
        log.warning("node %s forgotten by an operator: its certificates are refused; it may join again "
                    "with the bootstrap token", request.node_id)  # fmt: skip
        return pb.ForgetNodeResponse(was_pinned=was_pinned, was_connected=was_connected)

    async def ListModels(  # noqa: N802
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        await authorize(context, *READERS)
        shown = [self._view_with_fit(v) for v in views.model_views(self._state)]
        return pb.ListModelsResponse(models=[convert.model_to_pb(v) for v in shown])

    async def EvaluateFit(  # noqa: N802
        self, request: pb.EvaluateFitRequest, context: grpc.aio.ServicerContext
    ) -> pb.EvaluateFitResponse:
        await authorize(context, *READERS)
        state = self._state
        spec = state.models.get(request.model) if request.model else None
        if request.model and spec is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.model!r} is not a desired model")
        source = spec.source if spec else request.source
        if not source:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "give a desired model's name or a model source"
            )
        nodes = list(state.nodes.values())
        chosen = [n for n in nodes if not request.node or n.node_id == request.node]
        if not chosen:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"node {request.node!r} is not known")
        profile, error = profile_for(source, nodes)
        if profile is None and error:  # the file is there but its header is unusable
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{source}: {error}")
        if profile is None:
            detail = f"no node has reported {source!r}; it can be evaluated once an agent holds the file"
            await context.abort(grpc.StatusCode.NOT_FOUND, detail)
        assert profile is not None
        try:
            params = context_params(spec, request.context_length, request.parallel, request.kv_type)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        offers = [node_resources(n) for n in sorted(chosen, key=lambda n: n.node_id)]
        best, answers = best_node(profile, params, offers)
        fits = []
        for rec, offer in zip(answers, offers, strict=True):
            est = rec.estimate or estimate(profile, params, offload_for(offer, (), 0))
            fits.append(convert.estimate_to_pb(rec, est))
        return pb.EvaluateFitResponse(nodes=fits, best_node=best.node if best else "")

    def _placed_on(self, model: str) -> str | None:
        replicas = [r for r in self._state.replicas.values() if r.model == model and r.node_id]
        replicas.sort(key=lambda r: r.phase != ReplicaPhase.READY)
        return replicas[0].node_id if replicas else None

    def _fit(self, model: str) -> tuple[Recommendation | None, str]:
        spec = self._state.models.get(model)
        if spec is None:
            return None, ""
        return model_recommendation(spec, list(self._state.nodes.values()), self._placed_on(model))

    def _with_fit(self, table: RoutingTable) -> RoutingTable:
        models: dict[str, ModelRoute] = {}
        for name, route in table.models.items():
            rec, error = self._fit(name)
            models[name] = replace(route, recommendation=rec, fit_error=error)
        return replace(table, models=models)

    def _view_with_fit(self, view: ModelStatusView) -> ModelStatusView:
        rec, error = self._fit(view.name)
        return replace(view, recommendation=rec, fit_error=error)

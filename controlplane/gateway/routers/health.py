"""Liveness, readiness and Prometheus metrics of the gateway process."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controlplane.gateway.routing import RoutingView


def router(routing: RoutingView, registry: CollectorRegistry) -> APIRouter:
    api = APIRouter()

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/health")
    async def health() -> JSONResponse:
        """llama-server's probe, for tools written against it: 200 once some model has a ready replica."""
        if routing.has_table and any(routing.table.ready_endpoints(m) for m in routing.table.models):
            return JSONResponse({"status": "ok"})
        return JSONResponse(
            {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}, 503
        )

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready while it can route: from a current table, or the last one while the control plane is away."""
        if not routing.has_table:
            return JSONResponse({"status": "waiting for the control plane's routing table"}, 503)
        body: dict[str, object] = {"status": "ok", "models": len(routing.table.models), "routes": "current"}
        if routing.settling:
            body.update(
                routes="settling",
                message="a control plane has just started and is taking over the running replicas: "
                "serving the last routing table until it has",
            )
        elif not routing.connected:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(routing.stale_since or time.time()))
            body.update(
                routes="stale",
                message=f"control plane unreachable since {since}: serving the last routing table; "
                "new models, replicas and readiness changes wait until it is back",
            )
        return JSONResponse(body)

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return api

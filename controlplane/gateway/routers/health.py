"""Liveness, readiness and Prometheus metrics of the gateway process."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controlplane.gateway.routing import RoutingView


def router(routing: RoutingView, registry: CollectorRegistry) -> APIRouter:
    api = APIRouter()

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        if not routing.synced:
            return JSONResponse({"status": "waiting for the control plane's routing table"}, 503)
        return JSONResponse({"status": "ok", "models": len(routing.table.models)})

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return api

"""Builds the gateway's FastAPI application: access control, routers, error handlers."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from controlplane.api.client import ClusterClient
from controlplane.gateway.access.guard import AccessGuard
from controlplane.gateway.access.keys import KeyRing
from controlplane.gateway.access.quota import Quotas
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.proxy import EngineProxy
from controlplane.gateway.routers import admin, completions, health, models, replicas
from controlplane.gateway.routing import RoutingView
from controlplane.gateway.settings import GatewaySettings
from llamafleet import __version__
from llamafleet.core import http_errors
from llamafleet.core.body_limit import BodyLimit


def create_app(
    settings: GatewaySettings,
    routing: RoutingView,
    proxy: EngineProxy,
    registry: CollectorRegistry,
    cluster: ClusterClient,
    access: tuple[KeyRing, Quotas, GatewayMetrics] | None = None,
) -> FastAPI:
    """``access``: the keys, their quotas and the metrics to count them in (default: the settings'
    keys, quotas counted in this process)."""
    app = FastAPI(title="llamafleet gateway", version=__version__, docs_url="/docs", redoc_url=None)
    http_errors.install(app, "gateway")
    ring, quotas, metrics = access or (
        KeyRing(settings.keys_file, settings.api_keys),
        Quotas(),
        GatewayMetrics(CollectorRegistry()),
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessGuard, ring=ring, metrics=metrics)  # outermost: before any body is read

    app.include_router(health.router(routing, registry))
    app.include_router(models.router(routing))
    app.include_router(completions.router(proxy, quotas))
    app.include_router(replicas.router(routing, proxy.client))
    app.include_router(admin.router(cluster))
    return app

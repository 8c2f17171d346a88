"""Builds the gateway's FastAPI application: access control, routers, error handlers."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry

from controlplane.api.client import ClusterClient
from controlplane.gateway.access.api_keys import KeyRing
from controlplane.gateway.access.guard import AccessGuard
from controlplane.gateway.access.quota import Quotas
from controlplane.gateway.balancer.request_keys import SESSION_HEADER
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.model_names import ModelNames
from controlplane.gateway.proxy import EngineProxy
from controlplane.gateway.routers import admin, health, inference, models, replicas
from controlplane.gateway.routing import RoutingView
from controlplane.gateway.settings import GatewaySettings
from llamafleet import __version__
from llamafleet.http import errors as http_errors
from llamafleet.http.body_limit import BodyLimit
from llamafleet.protocol.aliases import LlamaServerCompat


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
    app.add_middleware(  # before any body is read
        AccessGuard, ring=ring, metrics=metrics, cors_origins=tuple(settings.cors_origins)
    )
    if settings.cors_origins:  # outermost: preflights answered before authentication, 401s readable
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Api-Key", SESSION_HEADER],
            max_age=600,
        )
    app.add_middleware(LlamaServerCompat)  # outermost: every layer sees the canonical path

    app.include_router(health.router(routing, registry))
    names = ModelNames(settings.model_aliases, settings.default_model)
    app.include_router(models.router(routing, names))
    app.include_router(inference.router(proxy, quotas, names))
    app.include_router(replicas.router(routing, proxy.client))
    app.include_router(admin.router(cluster))
    return app

"""Builds the gateway's FastAPI application: auth, routers, error handlers."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry

from controlplane.api.client import ClusterClient
from controlplane.gateway.proxy import EngineProxy
from controlplane.gateway.routers import admin, completions, health, models, replicas
from controlplane.gateway.routing import RoutingView
from controlplane.gateway.settings import GatewaySettings
from llamafleet import __version__
from llamafleet.core import http_errors
from llamafleet.core.body_limit import BodyLimit
from llamafleet.core.errors import Unauthorized

_OPEN_PATHS = ("/healthz", "/readyz", "/metrics")


def create_app(
    settings: GatewaySettings,
    routing: RoutingView,
    proxy: EngineProxy,
    registry: CollectorRegistry,
    cluster: ClusterClient,
) -> FastAPI:
    app = FastAPI(title="llamafleet gateway", version=__version__, docs_url="/docs", redoc_url=None)
    http_errors.install(app, "gateway")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    if settings.api_keys:
        keys = [k.encode() for k in settings.api_keys]

        @app.middleware("http")
        async def authenticate(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if request.url.path in _OPEN_PATHS:
                return await call_next(request)
            token = request.headers.get("authorization", "").removeprefix("Bearer ").strip().encode()
            if not any(hmac.compare_digest(token, key) for key in keys):
                return http_errors.error_response(
                    Unauthorized("missing or invalid API key (Authorization: Bearer …)")
                )
            return await call_next(request)

    app.include_router(health.router(routing, registry))
    app.include_router(models.router(routing))
    app.include_router(completions.router(proxy))
    app.include_router(replicas.router(routing, proxy.client))
    app.include_router(admin.router(cluster))
    return app

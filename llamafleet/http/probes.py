"""/healthz, /readyz and /metrics on one HTTP port: what Kubernetes probes and Prometheus scrape.

/healthz answers 200 while the process runs; /readyz answers 200 only while ``ready()`` says so
(the control plane: serving or following; the agent: connected to the control plane), with the
details it returns, and 503 otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from llamafleet.http.server import serve_until

Readiness = Callable[[], tuple[bool, dict[str, Any]]]


def probes_app(
    title: str, ready: Readiness, registry: CollectorRegistry, more: Callable[[FastAPI], None] | None = None
) -> FastAPI:
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    if more is not None:
        more(app)  # the process's own extra routes

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok, details = ready()
        return JSONResponse({"status": "ok" if ok else "not ready", **details}, 200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def serve_probes(
    title: str,
    host: str,
    port: int,
    stop: asyncio.Event,
    ready: Readiness,
    registry: CollectorRegistry,
    more: Callable[[FastAPI], None] | None = None,
) -> None:
    if not await serve_until(probes_app(title, ready, registry, more), host, port, stop):
        raise OSError(f"cannot listen on {host}:{port} for /healthz and /readyz (port in use?)")

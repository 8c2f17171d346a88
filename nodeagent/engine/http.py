"""The engine's HTTP surface for one model replica: every dialect's inference routes
(nodeagent/engine/routes/), /health, /slots, /adapters, /threads, /v1/models and /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llamafleet.contract.replica import AdapterSpec
from llamafleet.core.threads import THREADS_PATH, ThreadsRequest
from llamafleet.http import errors as http_errors
from llamafleet.http.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimit
from llamafleet.protocol.aliases import LlamaServerCompat
from llamafleet.protocol.openai import AdapterLoadRequest
from llamafleet.security.engine_auth import EngineSecret
from nodeagent.engine.adapters import confined
from nodeagent.engine.core import EngineCore
from nodeagent.engine.metrics import EngineMetrics
from nodeagent.engine.model_server_metrics import ModelServerMetrics
from nodeagent.engine.routes import include as include_inference_routes
from nodeagent.engine.routes.serving import Serving
from nodeagent.engine.tenancy import TenancyHeaders


def create_app(
    core: EngineCore,
    model_name: str,
    metrics: EngineMetrics,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    secret: str = "",
    adapter_dirs: list[Path] | None = None,
) -> FastAPI:
    """``secret``: required on every request but /health (Authorization: Bearer), none when empty.
    ``adapter_dirs``: the folders runtime adapter loads may read (any path when None or empty)."""
    app = FastAPI(title=f"llamafleet engine ({model_name})", docs_url=None, redoc_url=None)
    http_errors.install(app, "engine")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(TenancyHeaders)  # inside the secret check: only the gateway's headers count
    if secret:
        app.add_middleware(EngineSecret, secret=secret)  # nothing but path mapping runs before it
    app.add_middleware(LlamaServerCompat)
    folders = list(adapter_dirs or [])
    serving = Serving(core, model_name, metrics)
    metrics.registry.register(  # read at scrape time (a core still loading reads as idle)
        ModelServerMetrics(
            model_name, lambda: core.serving_load(), lambda: [a["name"] for a in core.adapters()]
        )
    )

    @app.get("/health")
    async def health() -> JSONResponse:
        if not core.ready:
            return JSONResponse({"status": "loading", "model": model_name}, 503)
        slots = core.slots()
        return JSONResponse(
            {
                "status": "ok",
                "model": model_name,
                "slots_total": len(slots),
                "slots_idle": sum(1 for s in slots if s["state"] == "idle"),
                "adapters": [a["name"] for a in core.adapters()],
                "threads": core.threads(),
                # what its prompt cache holds now, of its --cache-ram: the agent counts the rest, which
                # the cache may still take, as not free on the node
                "prompt_cache_bytes": core.serving_load().prompt_cache_bytes,
            }
        )

    @app.put(THREADS_PATH)
    async def set_threads(body: ThreadsRequest) -> dict[str, int]:
        """The node agent shares the node's CPUs among its engines and moves this as replicas come and go."""
        serving.check_ready()
        return {"threads": await core.set_threads(body.threads)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The one model this engine serves, as OpenAI's list (llama-server answers it too)."""
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "llamafleet"}]}

    @app.get("/slots")
    async def slots() -> list[dict[str, Any]]:
        serving.check_ready()
        return core.slots()

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    include_inference_routes(app, serving)

    @app.get("/adapters")
    async def adapters() -> dict[str, Any]:
        return {"object": "list", "data": core.adapters()}

    @app.post("/adapters")
    async def load_adapter(body: AdapterLoadRequest) -> dict[str, Any]:
        serving.check_ready()
        return await core.load_adapter(AdapterSpec(body.name, str(confined(body.path, folders)), body.scale))

    @app.delete("/adapters/{name}")
    async def unload_adapter(name: str) -> dict[str, Any]:
        serving.check_ready()
        await core.unload_adapter(name)
        return {"name": name, "unloaded": True}

    return app

"""Per-replica engine endpoints through the gateway: slots, and LoRA adapters loaded at runtime.

    GET    /v1/replicas/{model}/slots            every ready replica's /slots
    GET    /v1/replicas/{model}/adapters         every ready replica's loaded adapters
    POST   /v1/replicas/{model}/adapters         load {name, path, scale} on every ready replica
    DELETE /v1/replicas/{model}/adapters/{name}  unload it everywhere

Adapters loaded this way live as long as the engine process; declare them in the model's
``adapters`` to have them after a restart. The agent reports what each engine has loaded, so
``model:name`` appears in /v1/models within one health check.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi import Path as PathParam

from controlplane.domain import Endpoint
from controlplane.gateway.routing import RoutingView
from llamafleet.core.errors import EngineFailed, Forbidden, InvalidRequest, ModelNotFound, Unavailable
from llamafleet.protocol.openai import ADAPTER_NAME, AdapterLoadRequest
from llamafleet.security.engine_auth import engine_headers


def router(routing: RoutingView, client: httpx.AsyncClient) -> APIRouter:
    api = APIRouter(prefix="/v1/replicas")

    def ready(model: str) -> list[Endpoint]:
        if model not in routing.table.models:
            raise ModelNotFound(
                f"model {model!r} does not exist; GET /v1/models lists the models served here"
            )
        endpoints = routing.table.ready_endpoints(model)
        if not endpoints:
            raise Unavailable(f"no ready replica of model {model!r}", retry_after=2)
        return endpoints

    async def each(
        model: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        async def one(endpoint: Endpoint) -> dict[str, Any]:
            try:
                response = await client.request(
                    method, endpoint.url + path, json=body, headers=engine_headers(endpoint.secret)
                )
            except httpx.HTTPError as exc:
                raise EngineFailed(f"replica {endpoint.replica_id} failed: {type(exc).__name__}") from exc
            try:
                payload = response.json()
            except ValueError as exc:
                raise EngineFailed(f"replica {endpoint.replica_id} answered {response.status_code}") from exc
            if response.status_code == 400:
                raise InvalidRequest(f"replica {endpoint.replica_id}: {payload['error']['message']}",
                                     payload["error"].get("param"))  # fmt: skip
            if response.status_code == 404:
                raise ModelNotFound(f"replica {endpoint.replica_id}: {payload['error']['message']}")
            if response.status_code == 403:
                raise Forbidden(f"replica {endpoint.replica_id}: {payload['error']['message']}")
            if response.status_code >= 300:
                raise EngineFailed(f"replica {endpoint.replica_id} answered {response.status_code}")
            return {"replica_id": endpoint.replica_id, "node_id": endpoint.node_id, "result": payload}

        return list(await asyncio.gather(*(one(e) for e in ready(model))))

    @api.get("/{model}/slots")
    async def slots(model: str) -> dict[str, Any]:
        return {"object": "list", "data": await each(model, "GET", "/slots")}

    @api.get("/{model}/adapters")
    async def adapters(model: str) -> dict[str, Any]:
        return {"object": "list", "data": await each(model, "GET", "/adapters")}

    @api.post("/{model}/adapters")
    async def load_adapter(model: str, body: AdapterLoadRequest) -> dict[str, Any]:
        return {"object": "list", "data": await each(model, "POST", "/adapters", body.model_dump())}

    @api.delete("/{model}/adapters/{name}")
    async def unload_adapter(
        model: str, name: str = PathParam(pattern=ADAPTER_NAME, description="The adapter's name")
    ) -> dict[str, Any]:
        return {"object": "list", "data": await each(model, "DELETE", f"/adapters/{name}")}

    return api

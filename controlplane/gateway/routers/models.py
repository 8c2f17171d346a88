"""GET /v1/models: every model the cluster is asked to serve, with its replica readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from controlplane.gateway.routing import RoutingView
from llamafleet.core.errors import ModelNotFound, Unavailable


def router(routing: RoutingView) -> APIRouter:
    api = APIRouter()

    def describe(name: str) -> dict[str, Any]:
        route = routing.table.models[name]
        return {
            "id": name,
            "object": "model",
            "created": route.created,
            "owned_by": "llamafleet",
            "llamafleet": {
                "ready_replicas": sum(1 for e in route.endpoints if e.ready),
                "context_length": route.context_length,
                "parallel_slots": route.parallel_slots,
            },
        }

    @api.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        if not routing.synced:
            raise Unavailable("the gateway has no routing table yet (control plane unreachable)", 1)
        return {"object": "list", "data": [describe(name) for name in sorted(routing.table.models)]}

    @api.get("/v1/models/{model:path}")
    async def get_model(model: str) -> dict[str, Any]:
        if model not in routing.table.models:
            raise ModelNotFound(f"model {model!r} does not exist")
        return describe(model)

    return api

"""GET /v1/models: every model the cluster is asked to serve, its LoRA adapters as base:adapter, readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from controlplane.gateway.access.api_keys import request_key
from controlplane.gateway.model_names import ModelNames
from controlplane.gateway.routing import RoutingView
from llamafleet.core.errors import ModelNotFound, Unavailable


def router(routing: RoutingView, model_names: ModelNames) -> APIRouter:
    api = APIRouter()

    def describe(name: str) -> dict[str, Any]:
        base, adapter = routing.table.resolve(name) or (name, None)
        route = routing.table.models[base]
        rec = route.recommendation
        return {
            "id": name,
            "object": "model",
            "created": route.created,
            "owned_by": "llamafleet",
            "parent": base if adapter else None,
            "aliases": model_names.aliases_of(name),  # configured on the gateway (--model-aliases)
            "llamafleet": {
                "ready_replicas": len(routing.table.ready_endpoints(base, adapter)),
                "context_length": route.context_length,
                "parallel_slots": route.parallel_slots,
                "adapter": adapter,
                "balancer": route.balancer or None,
                "fit_error": route.fit_error or None,
            },
            # Memory fit (Cortex's model compatibility shape): on the node it runs on, else the best node.
            "recommendation": rec.to_dict() if rec else None,
        }

    def names() -> list[str]:
        found = []
        for name, route in sorted(routing.table.models.items()):
            found.append(name)
            found += sorted({f"{name}:{a}" for e in route.endpoints for a in e.adapters})
        return found

    @api.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        if not routing.has_table:
            raise Unavailable("the gateway has no routing table yet (control plane unreachable)", 1)
        key = request_key(request.state)  # a key sees the models it may use, nothing else
        return {"object": "list", "data": [describe(name) for name in names() if key.may_use(name)]}

    @api.get("/v1/models/{model:path}")
    async def get_model(request: Request, model: str) -> dict[str, Any]:
        if routing.table.resolve(model) is None or not request_key(request.state).may_use(model):
            raise ModelNotFound(f"model {model!r} does not exist (or this API key may not use it)")
        return describe(model)

    return api

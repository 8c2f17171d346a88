"""GET /v1/admin/fit: would a model fit a node (or every node)? Asks the control plane; starts nothing.

    /v1/admin/fit?model=smollm2-135m                      # a desired model, as specified
    /v1/admin/fit?source=/models/x.gguf&node=gpu-1&context_length=32768&parallel=4&kv_type=q8_0

The answer per node has the shape of `llamafleet fit --json` (devices with every component,
RAM/VRAM/page cache) plus the Cortex-style recommendation; ``best_node`` is null when the
model fits nowhere, and each node's recommendation then says how much it is short.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from controlplane.api.client import ClusterClient
from llamafleet.core.errors import InvalidRequest


def router(client: ClusterClient) -> APIRouter:
    api = APIRouter()

    @api.get("/v1/admin/fit")
    async def fit(
        model: str = Query("", description="a desired model's name"),
        source: str = Query("", description="or a model source a node holds (builtin:NAME, a path)"),
        node: str = Query("", description="one node; empty: every node"),
        context_length: int = Query(
            0, ge=0, le=1_048_576, description="tokens per slot (0: the model's spec, else 4096)"
        ),
        parallel: int = Query(0, ge=0, le=256, description="slots (0: the model's spec, else 1)"),
        kv_type: str = Query("", description="KV cache type, e.g. f16, q8_0, q4_0 (empty: f16)"),
    ) -> dict[str, Any]:
        if not model and not source:
            raise InvalidRequest("give ?model=NAME (a desired model) or ?source=… (a model file)", "model")
        return await client.evaluate_fit(model, source, node, context_length, parallel, kv_type)

    return api

"""Every inference endpoint of llamafleet/protocol/endpoints.py (OpenAI, Responses, Messages, rerank and
llama-server's native API): validate, check the key's scope and quota, then hand to the proxy (routed by
``model``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from controlplane.gateway.access.api_keys import request_key
from controlplane.gateway.access.quota import Quotas
from controlplane.gateway.access.tenancy import TENANCY_HEADERS, tenancy_of
from controlplane.gateway.balancer.request_keys import SESSION_HEADER
from controlplane.gateway.model_names import ModelNames
from controlplane.gateway.proxy import EngineProxy, Forward
from controlplane.gateway.usage import reservation, with_usage
from llamafleet.core.errors import Forbidden, QuotaExceeded
from llamafleet.core.tracing import TRACE_HEADERS
from llamafleet.protocol.endpoint import Endpoint
from llamafleet.protocol.endpoints import INFERENCE, USAGE_CHUNK_PATHS


def _headers(request: Request) -> dict[str, str]:
    """The client headers the gateway reads: its sticky session, its trace context (W3C)."""
    return {h: v for h in (SESSION_HEADER, *TRACE_HEADERS) if (v := request.headers.get(h))}


def include_usage(body: object) -> bool:
    options = getattr(body, "stream_options", None)
    return bool(getattr(options, "include_usage", False))


def adapters_asked(body: object) -> list[str]:
    """The adapters a request's ``lora`` field names (the request types that have one)."""
    return [choice.name for choice in getattr(body, "lora", None) or []]


def router(proxy: EngineProxy, quotas: Quotas, names: ModelNames) -> APIRouter:
    api = APIRouter()

    async def forward(request: Request, path: str, label: str, body: Any, stream: bool) -> Response:
        asked: str = body.model
        model = names.resolve(asked)
        key = request_key(request.state)
        raw = names.rewrite(await request.body(), asked, model)
        try:
            key.require(model)
            tenancy = tenancy_of(
                key, {h: v for h in TENANCY_HEADERS if (v := request.headers.get(h)) is not None}
            )
            # ``lora`` names adapters as ``base:adapter`` does: each is checked as that model.
            for adapter in adapters_asked(body):
                key.require(f"{model.partition(':')[0]}:{adapter}")
            reserved = await quotas.admit(key, reservation(raw, body) if key.tokens_per_minute else 0)
        except (Forbidden, QuotaExceeded) as exc:
            proxy.count_refused(key, model, exc)
            raise
        # A key with a token quota is charged every stream's real tokens: ask the engine for the
        # usage chunk, and drop it from the stream when the client did not ask for it.
        strip = bool(
            key.tokens_per_minute and stream and path in USAGE_CHUNK_PATHS and not include_usage(body)
        )
        if strip:
            raw = with_usage(raw)
        forward = Forward(path, label, model, raw, stream, _headers(request), key, reserved, strip, tenancy)
        return await proxy.forward(forward)

    def route(endpoint: Endpoint) -> Callable[..., Awaitable[Response]]:
        async def handle(request: Request, body: BaseModel) -> Response:
            if endpoint.check is not None:
                endpoint.check(body)  # a request the engine would refuse is refused here, by its rules
            stream = endpoint.streams and bool(getattr(body, "stream", False))
            return await forward(request, endpoint.path, endpoint.label, body, stream)

        # FastAPI validates the body by this annotation (and documents it in /openapi.json).
        handle.__annotations__ = {"request": Request, "body": endpoint.request, "return": Response}
        return handle

    for endpoint in INFERENCE:
        api.add_api_route(endpoint.path, route(endpoint), methods=["POST"], response_model=None,
                          name=endpoint.label)  # fmt: skip
    return api

"""The engine's handler for rerank (llamafleet/protocol/rerank.py's table)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from llamafleet.protocol.rerank import RerankRequest
from nodeagent.engine.routes.serving import Handler, Serving


def handlers(s: Serving) -> dict[str, Handler]:
    async def rerank(body: RerankRequest, request: Request) -> Response:
        s.check_ready()
        return await s.once(s.core.rerank(body), "rerank", request)

    return {"rerank": rerank}

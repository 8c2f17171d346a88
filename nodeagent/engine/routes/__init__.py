"""The engine's inference routes, one module per dialect, made from llamafleet/protocol/'s tables: each
module's ``handlers`` answers its dialect's endpoints by label, and ``include`` registers them."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from llamafleet.protocol.endpoints import DIALECTS
from nodeagent.engine.routes import messages, native, openai, rerank, responses
from nodeagent.engine.routes.serving import Handler, Serving

HANDLERS: dict[str, Callable[[Serving], dict[str, Handler]]] = {
    "openai": openai.handlers,
    "native": native.handlers,
    "rerank": rerank.handlers,
    "responses": responses.handlers,
    "messages": messages.handlers,
}


def include(app: FastAPI, serving: Serving) -> None:
    """Every endpoint of every dialect's table, answered by that dialect's handler of its label."""
    if HANDLERS.keys() != DIALECTS.keys():
        raise RuntimeError(f"dialects without engine handlers: {DIALECTS.keys() ^ HANDLERS.keys()}")
    for dialect, table in DIALECTS.items():
        handlers = HANDLERS[dialect](serving)
        if handlers.keys() != {e.label for e in table}:
            raise RuntimeError(f"{dialect}: handlers {sorted(handlers)} for {[e.label for e in table]}")
        for endpoint in table:
            app.add_api_route(endpoint.path, handlers[endpoint.label], methods=["POST"], name=endpoint.label)

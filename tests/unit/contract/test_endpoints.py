"""The inference endpoints are written once (llamafleet/contract/endpoints.py): the gateway and the
engine each serve exactly those paths as POST, with the table's request type as the body, and every
llama-server path alias leads to a path one of them serves."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry

from controlplane.gateway.routers import inference
from llamafleet.contract.endpoints import INFERENCE, USAGE_CHUNK_PATHS
from llamafleet.core.llama_server_compat import PATH_ALIASES
from nodeagent.engine.http import create_app
from nodeagent.engine.metrics import EngineMetrics


def _posts(routes: list[Any]) -> dict[str, type]:
    """POST path → the type its body is validated as."""
    found: dict[str, type] = {}
    for route in routes:
        if isinstance(route, APIRoute) and "POST" in route.methods and route.body_field is not None:
            assert route.path not in found, f"{route.path} is served twice"
            found[route.path] = route.body_field.field_info.annotation
    return found


def test_the_gateway_and_the_engine_serve_the_table_and_only_it() -> None:
    table = {e.path: e.request for e in INFERENCE}
    assert len(table) == len(INFERENCE)
    gateway = _posts(inference.router(None, None, None).routes)  # type: ignore[arg-type]
    assert gateway == table
    engine_app = create_app(None, "m", EngineMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    engine = {path: kind for path, kind in _posts(engine_app.routes).items() if path != "/adapters"}
    assert engine == table
    assert {"/v1/chat/completions", "/v1/completions"} == USAGE_CHUNK_PATHS


def test_every_llama_server_alias_leads_to_a_path_the_engine_serves() -> None:
    engine_app = create_app(None, "m", EngineMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    served = {r.path for r in engine_app.routes if isinstance(r, APIRoute)}
    assert set(PATH_ALIASES.values()) <= served, set(PATH_ALIASES.values()) - served

"""The inference endpoints are written once, in each dialect's table (llamafleet/protocol/): the
gateway and the engine each serve exactly those paths as POST, with the table's request type as the
body, and every llama-server path alias leads to a path one of them serves."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry

from controlplane.gateway.routers import inference
from llamafleet.protocol.aliases import PATH_ALIASES
from llamafleet.protocol.endpoint import no_pieces, no_usage
from llamafleet.protocol.endpoints import DIALECTS, INFERENCE, USAGE_CHUNK_PATHS
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


def test_every_endpoint_that_runs_the_model_says_how_its_answers_count_tokens() -> None:
    """Quotas and token metrics read each dialect's answers by its own rules: an endpoint that generates
    or embeds must have a usage reader, and one that streams a way to count a stream cut short."""
    free = {"input_tokens", "count_tokens", "tokenize", "detokenize", "apply_template"}
    for endpoint in INFERENCE:
        assert (endpoint.usage is no_usage) == (endpoint.label in free), endpoint.label
        assert (endpoint.pieces is not no_pieces) == endpoint.streams, endpoint.label


def test_each_dialect_is_answered_by_the_engine_handlers_of_its_own_module() -> None:
    routes = {r.path: r for r in create_app(None, "m", EngineMetrics(CollectorRegistry())).routes}  # type: ignore[arg-type]
    for dialect, table in DIALECTS.items():
        for endpoint in table:
            handler = routes[endpoint.path].endpoint  # type: ignore[attr-defined]
            assert handler.__module__ == f"nodeagent.engine.routes.{dialect}", endpoint.path

"""Without keys, anonymous callers may use models, and only a local caller is admin: never one from the
network, a page of another origin, or a DNS-rebound name (issue 28)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controlplane.gateway.access.guard import AccessGuard, local_caller
from controlplane.gateway.access.keys import KeyRing
from controlplane.gateway.metrics import GatewayMetrics


def scope(
    client: str, host: str, origin: str | None = None, path: str = "/v1/replicas/m/slots"
) -> dict[str, Any]:
    headers = [(b"host", host.encode())] + ([(b"origin", origin.encode())] if origin else [])
    return {"type": "http", "path": path, "client": (client, 5555), "headers": headers}


@pytest.mark.parametrize(
    ("client", "host", "origin", "local"),
    [
        ("127.0.0.1", "127.0.0.1:8080", None, True),
        ("::1", "[::1]:8080", None, True),
        ("127.0.0.1", "localhost:8080", "http://localhost:3000", True),  # a local web UI
        ("10.1.2.3", "10.0.0.1:8080", None, False),  # another machine
        ("127.0.0.1", "evil.example:8080", None, False),  # DNS rebinding: the page's name, our address
        ("127.0.0.1", "127.0.0.1:8080", "https://evil.example", False),  # a page of another origin
        ("127.0.0.1", "", None, False),
    ],
)
def test_who_counts_as_local(client: str, host: str, origin: str | None, local: bool) -> None:
    assert local_caller(scope(client, host, origin)) is local


async def test_only_a_local_anonymous_caller_reaches_the_admin_routes() -> None:
    reached: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["state"]["api_key"].name)

    guard = AccessGuard(app, KeyRing(None, []), GatewayMetrics(CollectorRegistry()))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await guard(scope("127.0.0.1", "127.0.0.1:8080"), receive, send)
    assert reached == ["anonymous"]
    await guard(scope("10.1.2.3", "gateway:8080"), receive, send)
    assert reached == ["anonymous"]  # refused before the app
    assert sent[0]["status"] == 403
    await guard(scope("10.1.2.3", "gateway:8080", path="/v1/chat/completions"), receive, send)
    assert reached == ["anonymous", "anonymous"]  # models stay open without keys


async def test_a_websocket_scope_is_closed_before_the_app() -> None:
    reached: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    guard = AccessGuard(app, KeyRing(None, ["k"]), GatewayMetrics(CollectorRegistry()))
    await guard({"type": "websocket", "path": "/v1/chat/completions", "headers": []}, receive, send)
    assert reached == []
    assert sent == [{"type": "websocket.close", "code": 1008}]
    await guard({"type": "lifespan"}, receive, send)
    assert reached == ["lifespan"]

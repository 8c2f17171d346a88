"""Without keys, anonymous callers may use models, and only a local caller is admin: never one from the
network, a page of another origin, or a DNS-rebound name (issue 28)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controlplane.gateway.access.api_keys import KeyRing
from controlplane.gateway.access.guard import AccessGuard, cross_site, local_caller
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


def post(client: str, host: str, content_type: str | None, origin: str | None = None) -> dict[str, Any]:
    headers = [(b"host", host.encode())]
    headers += [(b"content-type", content_type.encode())] if content_type else []
    headers += [(b"origin", origin.encode())] if origin else []
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "client": (client, 1),
            "headers": headers}  # fmt: skip


@pytest.mark.parametrize(
    ("request_scope", "refused"),
    [
        (post("127.0.0.1", "127.0.0.1:8080", "application/json"), ""),
        (post("10.1.2.3", "gateway:8080", "application/json; charset=utf-8"), ""),
        (post("127.0.0.1", "localhost:8080", "application/json", "http://localhost:5173"), ""),
        (post("127.0.0.1", "localhost:8080", "application/json", "https://chat.example.com"), ""),  # listed
        (post("127.0.0.1", "127.0.0.1:8080", "text/plain"), "Content-Type: application/json"),
        (post("127.0.0.1", "127.0.0.1:8080", None), "Content-Type: application/json"),
        (post("127.0.0.1", "127.0.0.1:8080", "application/x-www-form-urlencoded"), "application/json"),
        (post("127.0.0.1", "127.0.0.1:8080", "application/json", "https://evil.example"), "evil.example"),
        (post("127.0.0.1", "evil.example:8080", "application/json"), "DNS rebinding"),
    ],
)
def test_a_keyless_gateway_refuses_what_a_web_page_could_send(
    request_scope: dict[str, Any], refused: str
) -> None:
    """A page may POST text/plain or a form to a localhost gateway without a preflight, and DNS rebinding
    lets it read the answer: without keys, both are refused (issue 28)."""
    why = cross_site(request_scope, frozenset({"https://chat.example.com"}))
    assert (refused in why) if refused else why == ""


async def test_with_keys_the_cross_site_rules_do_not_apply() -> None:
    reached: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["state"]["api_key"].name)

    async def send(message: dict[str, Any]) -> None:
        pass

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    keyed = AccessGuard(app, KeyRing(None, ["k"]), GatewayMetrics(CollectorRegistry()))
    text_plain = post("127.0.0.1", "127.0.0.1:8080", "text/plain")
    text_plain["headers"].append((b"authorization", b"Bearer k"))
    await keyed(text_plain, receive, send)  # llama-server's clients post without a JSON type
    assert reached == ["key-1"]

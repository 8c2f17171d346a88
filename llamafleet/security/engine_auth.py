"""The engine's request secret: only whoever holds it (the gateway, the agent) gets an answer.

The agent makes one secret per replica and hands it to the engine in its environment (never its
command line, which ``ps`` shows to every user); the engine reports nothing of it. The agent
sends it upstream over its mutually authenticated stream, and the control plane passes it to
gateways in the routing table. ``/health`` stays open: it is the agent's liveness probe and
shows no data.
"""

from __future__ import annotations

import hmac
import json
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from llamafleet.core.errors import error_body

log = logging.getLogger(__name__)

ENGINE_SECRET_ENV = "LLAMAFLEET_ENGINE_SECRET"
OPEN_PATHS = frozenset({"/health"})


def engine_headers(secret: str) -> dict[str, str]:
    """Headers that carry ``secret`` to an engine (none for an engine started without one)."""
    return {"authorization": f"Bearer {secret}"} if secret else {}


_REFUSED = json.dumps(
    error_body(
        "this engine answers only its gateway (missing or wrong replica secret)",
        "authentication_error",
        "invalid_api_key",
    )
).encode()


class EngineSecret:
    """Pure ASGI (no per-request task or body copy, unlike BaseHTTPMiddleware): 401 without the secret."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        self.app = app
        self._expected = f"Bearer {secret}".encode()
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        offered = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if hmac.compare_digest(offered, self._expected):
            await self.app(scope, receive, send)
            return
        self.refused += 1
        client = scope.get("client") or ("?", 0)
        log.warning(
            "refused %s %s from %s: no valid replica secret", scope["method"], scope["path"], client[0]
        )
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(_REFUSED)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": _REFUSED})

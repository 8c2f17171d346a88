"""Authenticates every request (but probes and /metrics) and confines admin routes to admin keys.

Without keys (``llamafleet up``'s default) every caller may use every model, and only a local caller
(loopback address, a loopback Host, no foreign Origin) is admin: a web page or DNS rebinding can
never load adapters or read replica views.

Pure ASGI, like the body limit: no task or body copy per request, and a refusal costs one hash.
The key a request carries (``Authorization: Bearer`` or ``x-api-key``) is left in
``request.state.api_key`` for the routers, which check its models and quotas.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from controlplane.gateway.access.api_keys import ANONYMOUS, LOCAL_ANONYMOUS, ApiKey, KeyRing
from controlplane.gateway.metrics import GatewayMetrics
from llamafleet.core.errors import Forbidden, LlamafleetError, Unauthorized
from llamafleet.http.errors import error_response

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/health", "/metrics"})
ADMIN_PREFIXES = ("/v1/admin/", "/v1/replicas/")


def offered_key(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return str(value[7:].strip().decode("latin-1"))
        if name == b"x-api-key":
            return str(value.strip().decode("latin-1"))
    return ""


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _hostname(value: str) -> str:
    """``host[:port]`` or a URL's authority, without the port (``[::1]:8080`` → ``[::1]``)."""
    value = value.split("://", 1)[-1].split("/", 1)[0]
    return value if value.startswith("[") and value.endswith("]") else value.rsplit(":", 1)[0]


def local_caller(scope: Scope) -> bool:
    """A caller on this machine that names it by a loopback name, not a web page of another origin:
    DNS rebinding gives a page another Host, and a page's request carries its Origin."""
    client = scope.get("client") or ("", 0)
    if client[0] not in ("127.0.0.1", "::1"):
        return False
    headers = dict(scope["headers"])
    host = _hostname(headers.get(b"host", b"").decode("latin-1"))
    origin = headers.get(b"origin")
    return host in LOOPBACK_NAMES and (
        origin is None or _hostname(origin.decode("latin-1")) in LOOPBACK_NAMES
    )


def cross_site(scope: Scope, allowed_origins: frozenset[str]) -> str:
    """Why a keyless gateway refuses a request a web page could have made (empty: it does not).

    - an ``Origin`` of another site that ``--cors-origins`` does not list (a page's POST carries it);
    - a loopback caller that names the gateway by a name that is not a loopback one (DNS rebinding:
      the page's own name, resolved to 127.0.0.1, with no Origin on a same-origin GET);
    - a POST whose body is not declared JSON (``text/plain``, a form: a "simple" cross-site request
      a browser sends without a preflight)."""
    headers = dict(scope["headers"])
    origin = headers.get(b"origin", b"").decode("latin-1")
    if (
        origin
        and origin != "null"
        and _hostname(origin) not in LOOPBACK_NAMES
        and origin not in allowed_origins
    ):
        return f"requests from web pages of {origin} are refused without API keys (add it to --cors-origins)"
    client = scope.get("client") or ("", 0)
    host = _hostname(headers.get(b"host", b"").decode("latin-1"))
    if client[0] in ("127.0.0.1", "::1") and host and host not in LOOPBACK_NAMES:
        return f"a local request for host {host!r} is refused without API keys (DNS rebinding); use localhost"
    if scope.get("method") == "POST":
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if not (kind == b"application/json" or kind.endswith(b"+json")):
            return "without API keys a POST body must be sent as Content-Type: application/json"
    return ""


class AccessGuard:
    def __init__(
        self, app: ASGIApp, ring: KeyRing, metrics: GatewayMetrics, cors_origins: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self._ring = ring
        self._metrics = metrics
        self._origins = frozenset(cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (scope["type"] == "http" and scope["path"] in OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # a WebSocket (no route takes one): closed before anything reads it
            await send({"type": "websocket.close", "code": 1008})
            return
        if self._ring.open and (why := cross_site(scope, self._origins)):
            self._metrics.key_refused.labels("anonymous", "cross_site").inc()
            await self._refuse(Forbidden(why), scope, receive, send)
            return
        key = self._key(scope)
        if key is None:
            self._metrics.key_refused.labels("", "unauthenticated").inc()
            await self._refuse(Unauthorized("missing or invalid API key (Authorization: Bearer …)"), scope,
                               receive, send)  # fmt: skip
            return
        if scope["path"].startswith(ADMIN_PREFIXES) and not key.admin:
            self._metrics.key_refused.labels(key.name, "admin").inc()
            await self._refuse(
                Forbidden(f"API key {key.name!r} may not call admin routes"), scope, receive, send
            )
            return
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)

    def _key(self, scope: Scope) -> ApiKey | None:
        if self._ring.open:
            return LOCAL_ANONYMOUS if local_caller(scope) else ANONYMOUS
        token = offered_key(scope)
        # Looked up by its SHA-256: a timing difference could only tell about a hash, not the key.
        return self._ring.lookup(token) if token else None

    @staticmethod
    async def _refuse(error: LlamafleetError, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(error, scope.get("path", ""))(scope, receive, send)

"""What llama-server accepts beyond the OpenAI paths, for the gateway and the engine alike.

Clients and tools written against llama-server call its paths without the /v1 prefix
(``/chat/completions``, ``/embeddings``, ``/models``, ``/v1/health``; ``/completions`` is its own
``/completion`` API, as in llama-server), and send
JSON with whatever Content-Type curl's ``-d`` picks (form-urlencoded) or none at all. A pure ASGI
middleware maps both onto the canonical request before anything else (authentication, routing,
metrics) sees it, so every other layer knows one path per endpoint.
"""

from __future__ import annotations

from typing import Any

Scope = dict[str, Any]

PATH_ALIASES = {
    "/chat/completions": "/v1/chat/completions",
    "/chat/completions/input_tokens": "/v1/chat/completions/input_tokens",
    "/responses": "/v1/responses",
    "/completions": "/completion",  # llama-server's own completion API there, not OpenAI's
    "/embeddings": "/v1/embeddings",
    "/models": "/v1/models",
    "/v1/health": "/health",
    "/rerank": "/v1/rerank",
    "/reranking": "/v1/rerank",
    "/v1/reranking": "/v1/rerank",
}

# Bodies sent with these types (or none) are JSON in practice: llama-server reads them as JSON.
LENIENT_TYPES = (b"", b"application/x-www-form-urlencoded", b"text/plain")
JSON = (b"content-type", b"application/json")


def canonical(scope: Scope) -> Scope:
    path = PATH_ALIASES.get(scope["path"])
    if path is not None:
        scope = {**scope, "path": path, "raw_path": path.encode()}
    if scope["method"] == "POST":
        headers = scope.get("headers") or []
        kind = next((v for k, v in headers if k == b"content-type"), b"")
        if kind.split(b";")[0].strip().lower() in LENIENT_TYPES:
            scope = {**scope, "headers": [*(h for h in headers if h[0] != b"content-type"), JSON]}
    return scope


class LlamaServerCompat:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await self.app(canonical(scope) if scope["type"] == "http" else scope, receive, send)

"""A size cap on request bodies, for the gateway and the engine: 413 in OpenAI's envelope.

A pure ASGI middleware, so a body is refused before it is read into memory: by Content-Length
when the client sends one, else by counting a chunked body as it arrives (held up to the cap).
"""

from __future__ import annotations

import json
from typing import Any

from llamafleet.core.errors import error_body

Scope = dict[str, Any]
Message = dict[str, Any]

DEFAULT_MAX_BODY_BYTES = 32 << 20  # a 1M-token prompt as text is ~4 MiB


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.max_bytes <= 0:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:  # the server holds the client to it
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        # Chunked: read it up to the cap here (the framework would turn an error while it reads
        # the body into a 400), then hand it over whole.
        parts: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body"):
                break
        whole: list[Message] = [{"type": "http.request", "body": b"".join(parts), "more_body": False}]

        async def replay() -> Message:
            return whole.pop() if whole else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(error_body(
            f"request body is larger than this server accepts ({self.max_bytes} bytes)",
            "invalid_request_error", "request_too_large", "body",
        )).encode()  # fmt: skip
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

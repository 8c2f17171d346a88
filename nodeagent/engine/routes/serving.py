"""How every inference handler answers: readiness, a whole answer cancelled when its client leaves, a
stream whose bad input is still a 400, and the request metrics of both."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from llamafleet.core.errors import InvalidRequest, LlamafleetError, Unavailable, error_body
from nodeagent.engine.core import EngineCore
from nodeagent.engine.metrics import EngineMetrics
from nodeagent.engine.openai_shapes import Chunk

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]
DONE = b"data: [DONE]\n\n"  # OpenAI's last stream line (the other dialects send none)


@dataclass(frozen=True)
class Serving:
    core: EngineCore
    model_name: str
    metrics: EngineMetrics

    def check_ready(self) -> None:
        if not self.core.ready:
            raise Unavailable("model is still loading", retry_after=1)

    async def once(
        self, result: Awaitable[dict[str, Any] | list[Any]], endpoint: str, request: Request
    ) -> Response:
        """Await a whole response, but cancel it — freeing its slot — if the client disconnects first."""
        started = time.monotonic()
        work = asyncio.ensure_future(result)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not work.done():
            work.cancel()
            self.metrics.requests.labels(endpoint, "cancelled").inc()
            return Response(status_code=499)  # nobody is listening; nginx's "client closed request"
        try:
            body = work.result()
        except InvalidRequest:
            self.metrics.requests.labels(endpoint, "invalid").inc()
            raise
        self.metrics.request_seconds.labels(endpoint).observe(time.monotonic() - started)
        self.metrics.requests.labels(endpoint, "ok").inc()
        return JSONResponse(body)

    async def stream(
        self, chunks: AsyncIterator[Chunk], endpoint: str, done: bytes = DONE, named: bool = False
    ) -> StreamingResponse:
        """Pull the first chunk before answering, so bad input still gets a 400 rather than a 200 stream.
        ``done``: the stream's last line (the Responses and Messages APIs send none); ``named``: each
        event also gets an ``event:`` line with its type, as those two APIs' clients read it."""
        metrics = self.metrics
        started = time.monotonic()
        try:
            first = await anext(chunks)
        except InvalidRequest:
            metrics.requests.labels(endpoint, "invalid").inc()
            raise

        async def sse() -> AsyncIterator[bytes]:
            outcome = "cancelled"
            try:
                yield _sse(first, named)
                async for chunk in chunks:
                    yield _sse(chunk, named)
                yield done
                outcome = "ok"
            except LlamafleetError as exc:
                outcome = "error"
                log.warning("stream failed: %s", exc.message)
                yield _sse(error_body(exc.message, "server_error", exc.code))
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
                metrics.requests.labels(endpoint, outcome).inc()
                metrics.request_seconds.labels(endpoint).observe(time.monotonic() - started)

        return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is already read, so only http.disconnect is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _sse(payload: dict[str, Any], named: bool = False) -> bytes:
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return f"event: {payload.get('type', 'message')}\n".encode() + data if named else data

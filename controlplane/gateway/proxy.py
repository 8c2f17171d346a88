"""Forwards one OpenAI-style request to an engine replica; streams SSE through without buffering.

Connection failures before any byte was sent are retried on another replica; once a stream
has started, a failure ends it with an SSE error event (it is never retried).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from controlplane.domain import Endpoint
from controlplane.gateway.access.api_keys import ANONYMOUS, ApiKey
from controlplane.gateway.access.quota import NOTHING, Quotas, Reservation
from controlplane.gateway.balancer.balancer import Balancer, Grant
from controlplane.gateway.balancer.fair_queue import Tenancy
from controlplane.gateway.balancer.request_keys import request_keys
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.request_spans import RequestSpans
from controlplane.gateway.routing import RoutingView
from controlplane.gateway.settings import GatewaySettings
from controlplane.gateway.usage import StreamTokens, UsageStripper
from llamafleet.contract.engine_headers import fairness_headers
from llamafleet.core import tracing
from llamafleet.core.errors import (
    EngineFailed,
    Forbidden,
    LlamafleetError,
    ModelNotFound,
    Unavailable,
    error_body,
)
from llamafleet.core.tracing import TRACE_HEADERS
from llamafleet.http.errors import status_of
from llamafleet.protocol.endpoint import Tokens
from llamafleet.protocol.endpoints import BY_PATH
from llamafleet.security.engine_auth import engine_headers

log = logging.getLogger(__name__)

REPLICA_HEADER = "x-llamafleet-replica"  # which replica served the request (debugging, tests, benchmarks)
# Idle pooled connections to engines close after this, well before engines close them (KEEP_ALIVE_S:
# tests/unit/llamafleet/test_http_keepalive.py checks the order).
ENGINE_KEEPALIVE_S = 15.0
OTHER_MODEL = "other"  # the model label of requests for a name this gateway does not serve


@dataclass(frozen=True)
class Forward:
    """One request to forward: where, what, and how to account for it."""

    path: str  # e.g. /v1/chat/completions
    endpoint_label: str  # "chat" | "completions"
    model: str
    body: bytes
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)  # the client's, lower-cased (X-Session-ID)
    key: ApiKey = ANONYMOUS  # the caller's API key: its usage is counted under its name
    reserved: Reservation = NOTHING  # tokens admission took from the key's minute, settled at the end
    strip_usage: bool = False  # the engine was asked for usage the client did not ask for: drop it
    tenancy: Tenancy = field(
        default_factory=Tenancy
    )  # whose turn it takes in a busy model's queue (access/tenancy.py)


class EngineProxy:
    def __init__(
        self,
        settings: GatewaySettings,
        routing: RoutingView,
        balancer: Balancer,
        metrics: GatewayMetrics,
        quotas: Quotas | None = None,
    ) -> None:
        self._settings = settings
        self._quotas = quotas or Quotas()
        self._routing = routing
        self._balancer = balancer
        self._metrics = metrics
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
        )
        # The request path uses aiohttp: its C HTTP parser took 0.8 ms off each proxied request's
        # p50 here (bench/gateway_overhead.py); httpx stays for the replica admin endpoints.
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout_s, sock_read=settings.request_timeout_s
        )

    @property
    def client(self) -> httpx.AsyncClient:
        """The pooled HTTP client to the engines for the replica admin endpoints."""
        return self._client

    def _engines(self) -> aiohttp.ClientSession:
        if self._session is None:  # created inside the running event loop
            connector = aiohttp.TCPConnector(
                limit=1000,
                limit_per_host=0,
                socket_factory=engine_socket,
                keepalive_timeout=ENGINE_KEEPALIVE_S,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=False
            )
        return self._session

    async def close(self) -> None:
        await self._client.aclose()
        if self._session is not None:
            await self._session.close()

    def _resolve(self, model: str) -> tuple[str, str | None]:
        """The model and LoRA adapter a client's model name asks for (``base`` or ``base:adapter``)."""
        if not self._routing.has_table:
            raise Unavailable("the gateway has no routing table yet (control plane unreachable)", 1)
        resolved = self._routing.table.resolve(model)
        if resolved is None:
            raise ModelNotFound(
                f"model {model!r} does not exist; GET /v1/models lists the models served here"
            )
        return resolved

    def label(self, model: str) -> str:
        """A metric's model label: the model as served, or ``other`` for a name this gateway does not serve
        (a client's string must never become a series of its own: each would stay forever)."""
        if self._routing.has_table and self._routing.table.resolve(model) is not None:
            return model
        return OTHER_MODEL

    def count_refused(self, key: ApiKey, model: str, exc: LlamafleetError) -> None:
        """A request the key's scope or quota refused before it was forwarded."""
        why = "forbidden" if isinstance(exc, Forbidden) else "quota"
        self._metrics.key_refused.labels(key.name, why).inc()
        self._metrics.key_requests.labels(key.name, self.label(model), str(status_of(exc)[0])).inc()

    def _count(self, request: Forward, status: int | str) -> None:
        model = self.label(request.model)
        self._metrics.requests.labels(model, request.endpoint_label, str(status)).inc()
        self._metrics.key_requests.labels(request.key.name, model, str(status)).inc()

    def _charge(self, request: Forward, tokens: int) -> None:
        """Tokens (prompt + completion) against the key's quota and in its usage metrics; the request's
        reservation settled. Called once per request that was admitted (0 tokens when it failed)."""
        if tokens > 0:
            self._metrics.key_tokens.labels(request.key.name, request.model).inc(tokens)
        self._quotas.charge_tokens(request.key, tokens, request.reserved)

    async def forward(self, request: Forward) -> Response:
        started = time.monotonic()
        spans = RequestSpans.start(request.path, request.headers, started, {
            "gen_ai.request.model": request.model, "llamafleet.api_key": request.key.name,
            "llamafleet.tenant": request.tenancy.tenant, "llamafleet.stream": request.stream,
        }) if tracing.tracer() is not None else None  # fmt: skip
        try:
            response = await self._forward(request, started, spans)
        except Exception as exc:
            status = status_of(exc)[0] if isinstance(exc, LlamafleetError) else 500
            self._count(request, status)
            self._charge(request, 0)  # nothing served: the reservation goes back
            if spans is not None:
                spans.end(status)
            raise
        if not isinstance(response, StreamingResponse):
            if spans is not None:
                spans.end(response.status_code)
            self._count(request, response.status_code)
            self._metrics.request_seconds.labels(self.label(request.model), request.endpoint_label).observe(
                time.monotonic() - started
            )
        return response

    async def _forward(self, request: Forward, started: float, spans: RequestSpans | None) -> Response:
        base, adapter = self._resolve(request.model)
        keys = request_keys(request.body, request.headers)
        tried: set[str] = set()
        last_error = ""
        for attempt in range(self._settings.max_attempts):
            grant = Grant()
            asked = time.monotonic()
            endpoint = await self._balancer.acquire(
                lambda: self._routing.table, base, adapter, keys, tried, request.tenancy, grant
            )
            if endpoint is None:
                break
            # Traced: the engine's call is a span of ours; not: the client's context passes through unchanged
            # (an engine that traces continues the client's trace).
            traced = (
                passed_trace(request.headers) if spans is None else spans.engine_call(endpoint, request.path)
            )
            if spans is not None:
                spans.picked(endpoint, grant, asked)
            tried.add(endpoint.replica_id)
            if attempt:
                self._metrics.retries.labels(request.model).inc()
            try:
                response = await self._engines().post(
                    endpoint.url + request.path,
                    data=request.body,
                    headers={
                        "content-type": "application/json",
                        **engine_headers(endpoint.secret),
                        **fairness_headers(grant.tenant, grant.preempts),
                        **traced,
                    },
                )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # Nothing reached the engine: safe to try another replica.
                if spans is not None:
                    spans.engine_done(None, type(exc).__name__)
                await self._balancer.release(base, endpoint, grant)
                last_error = f"{endpoint.replica_id}: {type(exc).__name__}"
                log.warning("replica %s unreachable (%s); trying another", endpoint.replica_id, exc)
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                await self._balancer.release(base, endpoint, grant)
                raise EngineFailed(f"replica {endpoint.replica_id} failed: {type(exc).__name__}") from exc
            except BaseException:  # cancelled while the engine was asked (the server stopping): the slot back
                await asyncio.shield(self._balancer.release(base, endpoint, grant))
                raise
            if request.stream and response.status == 200:
                return self._relay(response, endpoint, request, started, base, grant, spans)
            try:
                return await self._complete(response, endpoint, request)
            finally:
                await self._balancer.release(base, endpoint, grant)
        route = self._routing.table.models.get(base)
        total = len(route.endpoints) if route else 0
        detail = f"; last error: {last_error}" if last_error else ""
        raise Unavailable(
            f"no ready replica of model {request.model!r} "
            f"({total} replica(s) starting or restarting){detail}",
            retry_after=self._settings.retry_after_s,
        )

    async def _complete(
        self, response: aiohttp.ClientResponse, endpoint: Endpoint, request: Forward
    ) -> Response:
        try:
            body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineFailed(f"replica {endpoint.replica_id} broke off its response") from exc
        finally:
            response.release()
        status = response.status
        if status == 503:
            raise Unavailable(f"replica {endpoint.replica_id} is not ready", self._settings.retry_after_s)
        if status >= 500:
            log.error("replica %s answered %d: %s", endpoint.replica_id, status, body[:300])
            raise EngineFailed(f"replica {endpoint.replica_id} failed (HTTP {status})")
        if status == 200:
            try:
                used = BY_PATH[request.path].usage(json.loads(body)) or Tokens()
            except (ValueError, TypeError):
                raise EngineFailed(f"replica {endpoint.replica_id} sent a malformed response") from None
            self._metrics.generated_tokens.labels(request.model).inc(used.completion)
            self._charge(request, used.total)
        else:
            self._charge(request, 0)
        return Response(
            body,
            status,
            media_type="application/json",
            headers={REPLICA_HEADER: endpoint.replica_id},
        )

    def _relay(
        self,
        response: aiohttp.ClientResponse,
        endpoint: Endpoint,
        request: Forward,
        started: float,
        base: str,
        grant: Grant,
        spans: RequestSpans | None,
    ) -> StreamingResponse:
        """The engine's stream passed through; its slot given back and the request counted exactly once,
        when the stream ends or breaks, or — the client gone before its first byte, when the body never
        starts and so no ``finally`` of its would run — when the response is over (``_Relayed``)."""
        tokens = StreamTokens(BY_PATH[request.path])
        outcome = _Outcome()

        async def finish() -> None:
            if outcome.done:
                return
            outcome.done = True
            response.close()  # a client disconnect lands here too: the engine sees it and cancels
            # Shielded: a second cancellation (the server stopping) must not leave the slot taken.
            await asyncio.shield(self._balancer.release(base, endpoint, grant))
            self._metrics.generated_tokens.labels(request.model).inc(tokens.count)
            self._count(request, outcome.status)
            self._charge(request, tokens.total)
            self._metrics.request_seconds.labels(request.model, request.endpoint_label).observe(
                time.monotonic() - started
            )
            if spans is not None:
                spans.end(outcome.status)

        async def body() -> AsyncIterator[bytes]:
            stripper = UsageStripper() if request.strip_usage else None
            first = True
            outcome.status = "200"
            try:
                async for chunk in response.content.iter_any():
                    if first:
                        self._metrics.ttft_seconds.labels(request.model).observe(time.monotonic() - started)
                        first = False
                    tokens.feed(chunk)
                    if stripper is None:
                        yield chunk
                    elif passed := stripper.feed(chunk):
                        yield passed
                if stripper is not None and (rest := stripper.rest()):
                    yield rest
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome.status = "502"
                log.warning("replica %s broke off a stream: %s", endpoint.replica_id, type(exc).__name__)
                message = f"replica {endpoint.replica_id} failed mid-stream; the response is incomplete"
                yield (
                    b"data: "
                    + json.dumps(error_body(message, "server_error", "engine_failed")).encode()
                    + b"\n\n"
                )
            finally:
                await finish()

        return _Relayed(
            finish,
            body(),
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                REPLICA_HEADER: endpoint.replica_id,
            },
        )


class _Relayed(StreamingResponse):
    """A stream whose ``finish`` runs however the response ends: sent, broken, or never started (a client
    that left while the request waited for a slot: Starlette may then cancel the body before its first
    step, or raise before it, and the body's own ``finally`` never runs)."""

    def __init__(self, finish: Callable[[], Awaitable[None]], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._finish = finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await asyncio.shield(self._finish())


def passed_trace(headers: dict[str, str]) -> dict[str, str]:
    return {h: v for h in TRACE_HEADERS if (v := headers.get(h))}


@dataclass
class _Outcome:
    status: str = "499"  # the client closed the request before any byte (nginx's code for it)
    done: bool = False


# An engine whose host drops off the network (a cut link, a dead node) sends no FIN: without these a
# request in flight to it would wait for --request-timeout-s (10 min). Keepalive probes (answered by
# the host's kernel even while the engine computes a long prefill) and a cap on unacknowledged data
# turn that into a clean 502 within ~15 s. A stopped engine process still answers them: the agent's
# health check replaces it.
KEEPALIVE = (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", 15_000))


def engine_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in KEEPALIVE:
        if hasattr(socket, name):  # Linux names them all; elsewhere what exists
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    return sock

"""Whose request the engine is serving and whose running request it may suspend for it: the
gateway's headers (llamafleet/contract/engine_headers.py), read once per request into a context
variable that the core reads when it builds the request's sequences; with them the request's W3C
trace context (llamafleet/core/tracing.py), which its spans are made under."""

from __future__ import annotations

from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send

from llamafleet.contract.engine_headers import PREEMPTS_HEADER, TENANT_HEADER
from llamafleet.core.tracing import TRACE_HEADERS

# (tenant, the tenant it may preempt); ("", "") outside a request or without the headers
CURRENT: ContextVar[tuple[str, str]] = ContextVar("llamafleet_tenancy", default=("", ""))
TRACE: ContextVar[dict[str, str]] = ContextVar("llamafleet_trace", default={})  # noqa: B039 (never mutated)
_TENANT, _PREEMPTS = TENANT_HEADER.encode(), PREEMPTS_HEADER.encode()
_TRACE = {h.encode(): h for h in TRACE_HEADERS}


class TenancyHeaders:
    """Pure ASGI middleware: sets ``CURRENT`` for the request from its headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tenant = preempts = ""
        trace: dict[str, str] = {}
        for key, value in scope["headers"]:
            if key == _TENANT:
                tenant = value.decode("latin-1")[:63]
            elif key == _PREEMPTS:
                preempts = value.decode("latin-1")[:63]
            elif key in _TRACE:
                trace[_TRACE[key]] = value.decode("latin-1")[:512]
        token = CURRENT.set((tenant, preempts))
        traced = TRACE.set(trace) if trace else None
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT.reset(token)
            if traced is not None:
                TRACE.reset(traced)

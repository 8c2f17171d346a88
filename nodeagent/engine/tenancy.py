"""Whose request the engine is serving and whose running request it may suspend for it: the
gateway's headers (llamafleet/contract/engine_headers.py), read once per request into a context
variable that the core reads when it builds the request's sequences."""

from __future__ import annotations

from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send

from llamafleet.contract.engine_headers import PREEMPTS_HEADER, TENANT_HEADER

# (tenant, the tenant it may preempt); ("", "") outside a request or without the headers
CURRENT: ContextVar[tuple[str, str]] = ContextVar("llamafleet_tenancy", default=("", ""))
_TENANT, _PREEMPTS = TENANT_HEADER.encode(), PREEMPTS_HEADER.encode()


class TenancyHeaders:
    """Pure ASGI middleware: sets ``CURRENT`` for the request from its headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tenant = preempts = ""
        for key, value in scope["headers"]:
            if key == _TENANT:
                tenant = value.decode("latin-1")[:63]
            elif key == _PREEMPTS:
                preempts = value.decode("latin-1")[:63]
        token = CURRENT.set((tenant, preempts))
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT.reset(token)

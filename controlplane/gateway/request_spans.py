"""The gateway's spans of one request (llamafleet/core/tracing.py), made only while tracing is on.

``POST /v1/...`` (server; under the client's ``traceparent`` when it sent one): the whole request, with
the model, the API key's name (never the key), the tenant, the replica and node that served it, the
status. Under it, per attempt: ``gateway.queue`` (from asking the balancer to the pick: the wait for
a slot, ~0 when one was free), ``balancer.pick`` (the policy, the chosen replica and node, why: the
policy's reason, e.g. prefix-owner, and whom the request may preempt), and ``engine`` (client: the
call to the engine, to its last byte), whose context the engine receives in ``traceparent``.
"""

from __future__ import annotations

import time
from typing import Any

from controlplane.domain import Endpoint
from controlplane.gateway.balancer.balancer import Grant
from llamafleet.core import tracing


class RequestSpans:
    def __init__(
        self, method_path: str, headers: dict[str, str], started: float, attributes: dict[str, Any]
    ) -> None:
        from opentelemetry.trace import SpanKind

        self._tracer = tracing.tracer()
        self._server = self._tracer.start_span(
            method_path, context=tracing.parent(headers), kind=SpanKind.SERVER,
            start_time=tracing.epoch_ns(started), attributes=attributes,
        )  # fmt: skip
        self._engine: Any = None

    @classmethod
    def start(
        cls, path: str, headers: dict[str, str], started: float, attributes: dict[str, Any]
    ) -> RequestSpans | None:
        """The request's spans, or None while tracing is off."""
        return cls(f"POST {path}", headers, started, attributes) if tracing.tracer() is not None else None

    def picked(self, endpoint: Endpoint, grant: Grant, asked: float) -> None:
        """The balancer gave ``endpoint`` at ``grant.picked_at`` for a request that asked at ``asked``."""
        under = tracing.child_of(self._server)
        picked = grant.picked_at or time.monotonic()
        queue = self._tracer.start_span("gateway.queue", context=under, start_time=tracing.epoch_ns(asked),
                                        attributes={"llamafleet.queued": grant.queued})  # fmt: skip
        queue.end(end_time=tracing.epoch_ns(picked))
        attributes = {
            "llamafleet.balancer.policy": grant.policy,
            "llamafleet.balancer.reason": grant.reason,
            "llamafleet.replica": endpoint.replica_id,
            "llamafleet.node": endpoint.node_id,
            "llamafleet.preempts": grant.preempts,
        }
        pick = self._tracer.start_span(
            "balancer.pick", under, start_time=tracing.epoch_ns(picked), attributes=attributes
        )
        pick.end(end_time=tracing.epoch_ns(picked))
        self._server.set_attribute("llamafleet.replica", endpoint.replica_id)
        self._server.set_attribute("llamafleet.node", endpoint.node_id)

    def engine_call(self, endpoint: Endpoint, path: str) -> dict[str, str]:
        """Start the call to the engine; the trace context headers it is sent with."""
        from opentelemetry.trace import SpanKind

        self.engine_done(None)  # an earlier attempt's, if it is still open
        attributes = {"server.address": endpoint.url, "llamafleet.replica": endpoint.replica_id}
        under = tracing.child_of(self._server)
        self._engine = self._tracer.start_span(
            f"POST {path}", under, kind=SpanKind.CLIENT, attributes=attributes
        )
        return tracing.headers_for(self._engine)

    def engine_done(self, status: int | str | None, error: str = "") -> None:
        if self._engine is None:
            return
        if status is not None:
            self._engine.set_attribute("http.response.status_code", int(status))
        if error:
            from opentelemetry.trace import Status, StatusCode

            self._engine.set_status(Status(StatusCode.ERROR, error))
        self._engine.end()
        self._engine = None

    def end(self, status: int | str) -> None:
        self.engine_done(status)
        self._server.set_attribute("http.response.status_code", int(status))
        if int(status) >= 500:
            from opentelemetry.trace import Status, StatusCode

            self._server.set_status(Status(StatusCode.ERROR))
        self._server.end()

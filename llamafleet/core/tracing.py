"""OpenTelemetry traces: one request followed from the client through the gateway to the engine.

Off unless the standard variables ask for it: an OTLP endpoint (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
or ``OTEL_EXPORTER_OTLP_ENDPOINT``), and neither ``OTEL_SDK_DISABLED=true`` nor
``OTEL_TRACES_EXPORTER=none``. Then spans go over OTLP/HTTP (protobuf; the exporter reads the other
``OTEL_EXPORTER_OTLP_*`` variables: headers, timeout, compression, certificates) in batches, with
``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` on the resource and the sampler from
``OTEL_TRACES_SAMPLER`` (default: parent-based, always on). Off, OpenTelemetry's trace SDK and
exporter are never imported and every call site pays one ``is None``.

Context crosses processes as W3C trace context (``traceparent``, ``tracestate``): accepted from
clients at the gateway, sent by the gateway to the engine. Spans are made when a request ends from
the times it recorded (``start_time``/``end_time``), so the serving path carries timestamps, not
span objects; the helpers here turn ``time.monotonic()`` readings into the epoch nanoseconds spans use.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

TRACE_HEADERS = ("traceparent", "tracestate")  # W3C trace context: what crosses process boundaries

_tracer: Any = None  # an opentelemetry Tracer once configured; None: tracing is off


def wanted(env: Mapping[str, str] = os.environ) -> str:
    """The OTLP traces endpoint the environment asks to export to; "" when tracing is off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return ""
    return env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ""


def configure(service: str, attributes: Mapping[str, str] | None = None, exporter: Any = None) -> bool:
    """Start tracing for this process as ``service`` when the environment asks (or ``exporter`` is
    given: tests' in-memory exporter, exported span by span). Whether it is on."""
    global _tracer
    endpoint = wanted()
    if exporter is None and not endpoint:
        _tracer = None
        return False
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if exporter is None and protocol != "http/protobuf":
        log.warning("traces are off: OTEL_EXPORTER_OTLP_PROTOCOL=%s, and llamafleet exports OTLP over "
                    "http/protobuf only (port 4318 on a collector)", protocol)  # fmt: skip
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", service), **(attributes or {})}
    )
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        atexit.register(provider.shutdown)  # what is batched goes out before the process ends
        log.info(
            "traces: exporting spans to %s over OTLP/HTTP as %s",
            endpoint,
            resource.attributes["service.name"],
        )
    _tracer = trace.get_tracer("llamafleet", tracer_provider=provider)
    return True


def tracer() -> Any:
    """The tracer, or None when tracing is off (check it before building anything for a span)."""
    return _tracer


def epoch_ns(monotonic: float) -> int:
    """A ``time.monotonic()`` reading as wall-clock nanoseconds since the epoch (a span's times)."""
    return time.time_ns() - int((time.monotonic() - monotonic) * 1e9)


def parent(headers: Mapping[str, str]) -> Any:
    """The context a request's ``traceparent`` names (None: it starts a trace)."""
    if not any(h in headers for h in TRACE_HEADERS):
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({h: headers[h] for h in TRACE_HEADERS if h in headers})


def child_of(span: Any) -> Any:
    """The context for spans under ``span``."""
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def headers_for(span: Any) -> dict[str, str]:
    """W3C trace context headers naming ``span`` as the parent of what the receiver does."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=child_of(span))
    return carrier

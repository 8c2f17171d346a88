"""An OTLP/HTTP trace receiver for tests: what a collector's port 4318 does with POST /v1/traces
(protobuf, gzip or not), keeping every span it is sent, decoded with OpenTelemetry's own protos."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int
    error: bool


@dataclass
class Received:
    spans: list[Span] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)  # as sent (decompressed), to search for secrets
    lock: threading.Lock = field(default_factory=threading.Lock)

    def named(self, name: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name == name]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Received]]:
    """(its base URL for OTEL_EXPORTER_OTLP_ENDPOINT, what it received)."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            spans = []
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        spans.append(Span(
                            str(resource.get("service.name", "")), s.name, s.trace_id.hex(), s.span_id.hex(),
                            s.parent_span_id.hex(), s.kind, {a.key: _value(a.value) for a in s.attributes},
                            s.start_time_unix_nano, s.end_time_unix_nano, s.status.code == 2,
                        ))  # fmt: skip
            with received.lock:
                received.spans.extend(spans)
                received.payloads.append(body)
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()

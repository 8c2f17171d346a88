"""llamafleet as the endpoint picker (EPP) of a Gateway API Inference Extension InferencePool: Envoy's
external processing protocol (``envoy.service.ext_proc.v3.ExternalProcessor``), as GIE's endpoint-picker
protocol v1 (docs/proposals/004-endpoint-picker-protocol) defines it.

One gRPC stream per HTTP request. The data plane sends the request's headers, then its body; the
picker reads the model and the prompt from the body and picks with the gateway's own balancer (the
model's policy: prefix affinity on the prompt's blocks, least load, sessions, adapters; fair queuing,
preemption and the queue bounds), among the ready engines of the model in the routing table — only
among the data plane's subset hint (``envoy.lb.subset_hint`` / ``x-gateway-destination-endpoint-subset``)
when it sends one. The answer names the pick, then fallbacks (the model's other ready engines that
answer the same request secret, least loaded first: none with the agents' per-replica secrets), as
``ip:port,ip:port…`` in the ``x-gateway-destination-endpoint`` request header and in the ``envoy.lb``
dynamic metadata alike, with the engine's request secret (Authorization) and the tenant headers the
gateway sends an engine. No ready engine (or none in the subset): an immediate
503; refused by the queue (full, timed out, shed, past an objective): an immediate 429 with
Retry-After; a model nothing serves: 404; a body that is not a JSON object: 400 — each with an
OpenAI-style error body.

Body modes: the data plane says which it uses in ``protocol_config`` (the first message). FULL_DUPLEX_
STREAMED (GIE's, and the default when it says nothing): the picker holds its answer to the headers
until the body's last chunk, then answers the headers (mutation, route cache cleared) and gives the
body back whole as a streamed response. BUFFERED (and BUFFERED_PARTIAL, STREAMED): the headers are
answered at once and the pick goes with the answer to the body. Response phases are answered in the
mode the data plane uses for them (echoed chunks in FULL_DUPLEX_STREAMED), the served endpoint
(``envoy.lb`` / ``x-gateway-destination-endpoint-served``) read from any message's metadata — a request
a fallback served moves its slot there — and the slot is given back when the response ends or the
stream closes (the client went away), so slot counts stay exact as in the HTTP gateway.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

from controlplane.domain import Endpoint, RoutingTable
from controlplane.gateway.balancer.balancer import Balancer, Grant
from controlplane.gateway.balancer.request_keys import request_keys
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.proxy import REPLICA_HEADER
from llamafleet.contract.engine_headers import fairness_headers
from llamafleet.core.errors import (
    InvalidRequest,
    LlamafleetError,
    ModelNotFound,
    Overloaded,
    QueueTimeout,
    Unavailable,
    error_body,
)
from llamafleet.http.errors import status_of
from llamafleet.security.engine_auth import engine_headers

log = logging.getLogger(__name__)

DESTINATION = "x-gateway-destination-endpoint"
SERVED = "x-gateway-destination-endpoint-served"
SUBSET = "x-gateway-destination-endpoint-subset"
LB_NAMESPACE = "envoy.lb"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
MAX_BODY_BYTES = 16 * 1024 * 1024  # a request body past this is refused (413), as the gateway's limit
DUPLEX = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED
MAX_CHUNK = 64 * 1024  # a body given back in a streamed response, in pieces of this many bytes


def address(endpoint: Endpoint) -> str:
    """An engine's ``ip:port`` (its URL without the scheme)."""
    return endpoint.url.split("://", 1)[-1].rstrip("/")


@dataclass
class Held:
    """The slot a stream's request holds, given back once."""

    model: str
    endpoint: Endpoint
    grant: Grant = field(default_factory=Grant)


class EndpointPicker(ext_proc_grpc.ExternalProcessorServicer):
    def __init__(
        self,
        table: Callable[[], RoutingTable],
        balancer: Balancer,
        metrics: GatewayMetrics,
        ready: Callable[[], bool],
    ) -> None:
        self._table = table
        self._balancer = balancer
        self._metrics = metrics
        self._ready = ready

    async def Process(  # noqa: N802 (the gRPC method's name)
        self, request_iterator: AsyncIterator[ext_proc.ProcessingRequest], context: object
    ) -> AsyncIterator[ext_proc.ProcessingResponse]:
        stream = _Stream(self)
        try:
            async for message in request_iterator:
                for response in await stream.handle(message):
                    yield response
                if stream.finished:
                    return
        finally:
            await stream.release()


class _Stream:
    """One HTTP request's exchange (see the module docstring)."""

    def __init__(self, picker: EndpointPicker) -> None:
        self._picker = picker
        self._request_mode = DUPLEX
        self._response_mode = DUPLEX
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._subset: list[str] | None = None
        self._held: Held | None = None
        self._answered_headers = False
        self.finished = False

    async def handle(self, message: ext_proc.ProcessingRequest) -> list[ext_proc.ProcessingResponse]:
        if message.HasField("protocol_config"):
            self._request_mode = message.protocol_config.request_body_mode
            self._response_mode = message.protocol_config.response_body_mode
        await self._read_metadata(message.metadata_context)
        kind = message.WhichOneof("request")
        if kind == "request_headers":
            return await self._request_headers(message.request_headers)
        if kind == "request_body":
            return await self._request_body(message.request_body)
        if kind == "response_headers":
            return await self._response_headers(message.response_headers)
        if kind == "response_body":
            return await self._response_body(message.response_body)
        if kind == "request_trailers":
            return [ext_proc.ProcessingResponse(request_trailers=ext_proc.TrailersResponse())]
        if kind == "response_trailers":
            await self.release()
            return [ext_proc.ProcessingResponse(response_trailers=ext_proc.TrailersResponse())]
        return []

    # --- the request ---------------------------------------------------------------------------
    async def _request_headers(self, headers: ext_proc.HttpHeaders) -> list[ext_proc.ProcessingResponse]:
        self._headers = {
            h.key.lower(): (h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value)
            for h in headers.headers.headers
        }
        if headers.end_of_stream:  # no body (GET /v1/models…): any ready engine of any model
            return await self._answer(with_body=False)
        if self._request_mode != DUPLEX:
            self._answered_headers = True
            return [ext_proc.ProcessingResponse(request_headers=ext_proc.HeadersResponse())]
        return []  # answered with the pick, once the body is in

    async def _request_body(self, body: ext_proc.HttpBody) -> list[ext_proc.ProcessingResponse]:
        self._body += body.body
        if len(self._body) > MAX_BODY_BYTES:
            return self._refuse(413, error_body(
                f"the request body is over {MAX_BODY_BYTES} bytes", "invalid_request_error", "body_too_large"
            ))  # fmt: skip
        if not (body.end_of_stream or body.end_of_stream_without_message):
            if self._request_mode == processing_mode_pb2.ProcessingMode.STREAMED:
                return [ext_proc.ProcessingResponse(request_body=ext_proc.BodyResponse())]
            return []  # duplex: every chunk comes back with the answer; buffered: one message only
        return await self._answer(with_body=True)

    async def _answer(self, with_body: bool) -> list[ext_proc.ProcessingResponse]:
        started = time.monotonic()
        try:
            picked = await self._pick()
        except LlamafleetError as exc:
            status, type_ = status_of(exc)
            param = exc.param if isinstance(exc, InvalidRequest) else None
            retry = exc.retry_after if isinstance(exc, Unavailable) else None
            return self._refuse(status, error_body(exc.message, type_, exc.code, param), retry)
        finally:
            self._picker._metrics.picker_seconds.observe(time.monotonic() - started)
        destinations, extra = picked
        value = ",".join(destinations)
        mutation = ext_proc.HeaderMutation(
            set_headers=[_header(DESTINATION, value), *(_header(k, v) for k, v in extra.items())]
        )
        metadata = struct_pb2.Struct()
        metadata.update({LB_NAMESPACE: {DESTINATION: value}})
        common = ext_proc.CommonResponse(header_mutation=mutation, clear_route_cache=True)
        if not with_body or self._answered_headers:  # no body, or headers answered already (buffered)
            if not with_body:
                return [ext_proc.ProcessingResponse(
                    request_headers=ext_proc.HeadersResponse(response=common), dynamic_metadata=metadata
                )]  # fmt: skip
            return [ext_proc.ProcessingResponse(
                request_body=ext_proc.BodyResponse(response=common), dynamic_metadata=metadata
            )]  # fmt: skip
        # Full duplex: the headers' answer carries the pick, then the body goes back as it came.
        answers = [ext_proc.ProcessingResponse(
            request_headers=ext_proc.HeadersResponse(response=common), dynamic_metadata=metadata
        )]  # fmt: skip
        body = bytes(self._body)
        pieces = [body[i : i + MAX_CHUNK] for i in range(0, len(body), MAX_CHUNK)] or [b""]
        for i, piece in enumerate(pieces):
            streamed = ext_proc.StreamedBodyResponse(body=piece, end_of_stream=i == len(pieces) - 1)
            answers.append(ext_proc.ProcessingResponse(request_body=ext_proc.BodyResponse(
                response=ext_proc.CommonResponse(body_mutation=ext_proc.BodyMutation(streamed_response=streamed))
            )))  # fmt: skip
        return answers

    async def _pick(self) -> tuple[list[str], dict[str, str]]:
        """(the pick, then fallbacks, as ip:port; headers for the engine), a slot taken on the pick."""
        if not self._picker._ready():
            raise Unavailable("the picker has no routing table yet (control plane unreachable)", 1)
        table = self._picker._table()
        model_name = ""
        if self._body:
            try:
                data = json.loads(self._body)
            except ValueError:
                raise InvalidRequest("the request body is not JSON", "body") from None
            if not isinstance(data, dict):
                raise InvalidRequest("the request body is not a JSON object", "body")
            model_name = str(data.get("model") or "")
        if model_name:
            resolved = table.resolve(model_name)
            if resolved is None:
                raise ModelNotFound(
                    f"model {model_name!r} does not exist; GET /v1/models lists the models served here"
                )
            model, adapter = resolved
        else:  # no model named: the first model with a ready engine (a listing, a health probe)
            model = next((m for m in sorted(table.models) if table.ready_endpoints(m)), "")
            adapter = None
        serving = table.ready_endpoints(model, adapter)
        allowed = {e.replica_id for e in serving}
        if self._subset is not None:
            allowed = {e.replica_id for e in serving if address(e) in self._subset}
            if not allowed:
                self._picker._metrics.picker_requests.labels("no_endpoint").inc()
                raise Unavailable(
                    f"no ready engine of {model or 'any model'!r} is in the data plane's subset "
                    f"({', '.join(self._subset) or 'empty'})", 1,
                )  # fmt: skip
        exclude = {e.replica_id for e in serving} - allowed
        grant = Grant()
        keys = request_keys(bytes(self._body), self._headers)
        try:
            endpoint = await self._picker._balancer.acquire(
                self._picker._table, model, adapter, keys, exclude, grant=grant
            )
        except (Overloaded, QueueTimeout):
            self._picker._metrics.picker_requests.labels("shed").inc()
            raise
        if endpoint is None:
            self._picker._metrics.picker_requests.labels("no_endpoint").inc()
            raise Unavailable(f"no ready engine serves {model_name or 'any model'!r}", 1)
        self._held = Held(model, endpoint, grant)
        self._picker._metrics.picker_requests.labels("picked").inc()
        # Fallbacks: the model's other engines that answer the same request secret (the data plane sends
        # one set of headers to whichever it tries, and each engine answers only its own secret: with
        # the agent's per-replica secrets that is none, and the pick stands alone).
        others = {e.replica_id for e in serving if e.secret == endpoint.secret} & allowed - {
            endpoint.replica_id
        }
        load = await self._picker._balancer.state.in_flight(sorted(others))
        by_id = {e.replica_id: e for e in serving}
        fallbacks = [address(by_id[r]) for r in sorted(load, key=lambda r: (load[r], r))]
        headers = {**engine_headers(endpoint.secret), **fairness_headers(grant.tenant, grant.preempts)}
        return [address(endpoint), *fallbacks], headers

    def _refuse(
        self, status: int, body: dict[str, object], retry_after: float | None = None
    ) -> list[ext_proc.ProcessingResponse]:
        self.finished = True
        headers = [_header("content-type", "application/json")]
        if retry_after is not None:
            headers.append(_header("retry-after", str(max(1, round(retry_after)))))
        return [ext_proc.ProcessingResponse(immediate_response=ext_proc.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=ext_proc.HeaderMutation(set_headers=headers),
            body=json.dumps(body).encode(),
            details=f"llamafleet endpoint picker: {status}",
        ))]  # fmt: skip

    # --- the response --------------------------------------------------------------------------
    async def _response_headers(self, headers: ext_proc.HttpHeaders) -> list[ext_proc.ProcessingResponse]:
        common = ext_proc.CommonResponse()
        if self._held is not None:
            common.header_mutation.set_headers.append(_header(REPLICA_HEADER, self._held.endpoint.replica_id))
        if headers.end_of_stream:
            await self.release()
        return [ext_proc.ProcessingResponse(response_headers=ext_proc.HeadersResponse(response=common))]

    async def _response_body(self, body: ext_proc.HttpBody) -> list[ext_proc.ProcessingResponse]:
        last = body.end_of_stream or body.end_of_stream_without_message
        if last:
            await self.release()
        if self._response_mode == DUPLEX:
            streamed = ext_proc.StreamedBodyResponse(body=body.body, end_of_stream=last)
            return [ext_proc.ProcessingResponse(response_body=ext_proc.BodyResponse(
                response=ext_proc.CommonResponse(body_mutation=ext_proc.BodyMutation(streamed_response=streamed))
            ))]  # fmt: skip
        return [ext_proc.ProcessingResponse(response_body=ext_proc.BodyResponse())]

    # --- metadata and the slot -----------------------------------------------------------------
    async def _read_metadata(self, metadata: base_pb2.Metadata) -> None:
        if SUBSET_NAMESPACE in metadata.filter_metadata:
            hint = metadata.filter_metadata[SUBSET_NAMESPACE].fields.get(SUBSET)
            if hint is not None:
                self._subset = _strings(hint)
        if LB_NAMESPACE in metadata.filter_metadata and self._held is not None:
            value = metadata.filter_metadata[LB_NAMESPACE].fields.get(SERVED)
            served = _strings(value)[0] if value is not None and _strings(value) else ""
            if served and served != address(self._held.endpoint):
                await self._moved(served)

    async def _moved(self, served: str) -> None:
        """A fallback served the request (the data plane's word for it): its slot is counted there."""
        held = self._held
        assert held is not None
        there = next(
            (e for e in self._picker._table().ready_endpoints(held.model) if address(e) == served), None
        )
        if there is None:
            log.warning(
                "the data plane says %s served a request; no ready engine of %s is there", served, held.model
            )
            return
        self._picker._metrics.picker_requests.labels("fallback_served").inc()
        await self._picker._balancer.moved(held.model, held.endpoint, there, held.grant)
        held.endpoint = there

    async def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await self._picker._balancer.release(held.model, held.endpoint, held.grant)


def _strings(value: struct_pb2.Value) -> list[str]:
    """A metadata value's endpoints: a list of strings, or one comma-separated string."""
    if value.HasField("list_value"):
        return [v.string_value for v in value.list_value.values if v.string_value]
    return [part.strip() for part in value.string_value.split(",") if part.strip()]


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, raw_value=value.encode()))

"""Envoy's side of the ext_proc protocol, as GIE's endpoint-picker protocol uses it, for tests: no Envoy
binary can be installed here, so this client drives a picker the way Envoy's ext_proc filter does.

What it does as Envoy does: a new gRPC channel and stream per HTTP request; ``protocol_config`` on the
first message (omitted on request, as older Envoys omit it); the request headers, then the body in
chunks (FULL_DUPLEX_STREAMED: every chunk sent without waiting, the answers collected after the
last; BUFFERED: headers, wait for their answer, then the whole body in one message); the subset hint
in ``envoy.lb.subset_hint`` filter metadata; the header mutations applied to the request it forwards
(to the first endpoint of ``x-gateway-destination-endpoint``, or the next on a connection failure,
as a retry policy would) with real HTTP; the upstream's response headers and body chunks sent
through the response phases with ``x-gateway-destination-endpoint-served`` in ``envoy.lb`` metadata;
an immediate response ends the exchange.

What it does not: Envoy's routing and clusters (ORIGINAL_DST, subsets), timeouts, trailers, gRPC
bodies, header validation, ``clear_route_cache`` (recorded, not acted on), mode overrides, and
observability mode.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from google.protobuf import json_format, struct_pb2

MODES = processing_mode_pb2.ProcessingMode
DESTINATION = "x-gateway-destination-endpoint"


@dataclass
class Exchange:
    """What one request's ext_proc exchange came to."""

    immediate: ext_proc.ImmediateResponse | None = None
    destination: str = ""  # the header's value
    metadata: dict[str, Any] = field(default_factory=dict)  # the dynamic metadata, as JSON
    request_headers: dict[str, str] = field(default_factory=dict)  # after the picker's mutations
    body: bytes = b""  # the request body as it would go upstream
    clear_route_cache: bool = False
    served_by: str = ""
    status: int = 0  # the upstream's
    ttft: float = 0.0  # seconds from sending the request upstream to its first byte back
    response_headers: dict[str, str] = field(default_factory=dict)  # after the picker's mutations
    response_body: bytes = b""  # as the client would get it

    @property
    def immediate_status(self) -> int:
        return self.immediate.status.code if self.immediate is not None else 0

    @property
    def immediate_json(self) -> dict[str, Any]:
        assert self.immediate is not None
        return dict(json.loads(self.immediate.body))


def _headers(pairs: dict[str, str]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
    )


def _apply(mutation: ext_proc.HeaderMutation, headers: dict[str, str]) -> None:
    for option in mutation.set_headers:
        headers[option.header.key.lower()] = option.header.raw_value.decode() or option.header.value
    for key in mutation.remove_headers:
        headers.pop(key.lower(), None)


class EnvoyLike:
    def __init__(
        self,
        picker: str,
        mode: int = MODES.FULL_DUPLEX_STREAMED,
        announce: bool = True,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        """``picker``: host:port; ``announce``: send protocol_config (False: an older Envoy's silence);
        ``http``: the client to engines (default: one per request)."""
        self._picker = picker
        self._mode = mode
        self._announce = announce
        self._http = http

    async def route(
        self,
        body: dict[str, Any] | bytes,
        path: str = "/v1/chat/completions",
        headers: dict[str, str] | None = None,
        subset: list[str] | None = None,
        chunk: int = 64,
        upstream: bool = False,
        hold: asyncio.Event | None = None,
        served: str = "",
        hold_response: asyncio.Event | None = None,
    ) -> Exchange:
        """One request. ``upstream``: forward it and run the response phases; without, the response is
        an empty 200 that ``served`` (ip:port) says served it. ``hold``: keep the stream open (the
        request in flight) until set; ``hold_response``: the same between the response's headers and
        its body."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        request_headers = {
            ":method": "POST",
            ":path": path,
            "content-type": "application/json",
            **(headers or {}),
        }
        exchange = Exchange(request_headers=dict(request_headers), served_by=served)
        self._hold_response = hold_response
        outbox: asyncio.Queue[ext_proc.ProcessingRequest | None] = asyncio.Queue()
        metadata = base_pb2.Metadata()
        if subset is not None:
            hint = struct_pb2.Struct()
            hint.update({"x-gateway-destination-endpoint-subset": subset})
            metadata.filter_metadata["envoy.lb.subset_hint"].CopyFrom(hint)

        async def requests() -> AsyncIterator[ext_proc.ProcessingRequest]:
            while (message := await outbox.get()) is not None:
                yield message

        async with grpc.aio.insecure_channel(self._picker) as channel:  # a connection per stream
            stream = ext_proc_grpc.ExternalProcessorStub(channel).Process(requests())
            first = ext_proc.ProcessingRequest(
                request_headers=ext_proc.HttpHeaders(
                    headers=_headers(request_headers), end_of_stream=not raw
                ),
                metadata_context=metadata,
            )
            if self._announce:
                first.protocol_config.request_body_mode = self._mode
                first.protocol_config.response_body_mode = self._mode
            await outbox.put(first)
            pieces = [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
            if self._mode == MODES.FULL_DUPLEX_STREAMED:
                for i, piece in enumerate(pieces):  # sent without waiting, as Envoy streams them
                    await outbox.put(ext_proc.ProcessingRequest(
                        request_body=ext_proc.HttpBody(body=piece, end_of_stream=i == len(pieces) - 1)
                    ))  # fmt: skip
            else:
                answer = await stream.read()
                if not self._take(answer, exchange, "request_headers"):
                    await outbox.put(None)
                    return exchange
                await outbox.put(
                    ext_proc.ProcessingRequest(request_body=ext_proc.HttpBody(body=raw, end_of_stream=True))
                )
            exchange.body = b"" if self._mode == MODES.FULL_DUPLEX_STREAMED else raw
            while True:  # the answers to the request phases
                answer = await stream.read()
                if answer == grpc.aio.EOF:
                    raise AssertionError("the picker closed the stream before answering the request")
                kind = answer.WhichOneof("response")
                if not self._take(answer, exchange, kind):
                    await outbox.put(None)
                    return exchange
                if kind == "request_body" and self._mode == MODES.FULL_DUPLEX_STREAMED:
                    streamed = answer.request_body.response.body_mutation.streamed_response
                    exchange.body += streamed.body
                    if streamed.end_of_stream:
                        break
                elif kind == "request_body" or (kind == "request_headers" and not raw):
                    break
            if hold is not None:
                await hold.wait()
            if upstream:
                await self._upstream(exchange, path, stream, outbox)
            else:
                await self._respond(
                    stream, outbox, exchange, 200, {"content-type": "application/json"}, [b"{}"]
                )
            await outbox.put(None)
        return exchange

    def _take(self, answer: ext_proc.ProcessingResponse, exchange: Exchange, kind: str | None) -> bool:
        """Apply one answer to the request; False when it was an immediate response."""
        if kind == "immediate_response":
            exchange.immediate = answer.immediate_response
            return False
        if answer.HasField("dynamic_metadata"):
            exchange.metadata = json_format.MessageToDict(answer.dynamic_metadata)
        common = getattr(answer, kind).response if kind else None
        if common is not None:
            _apply(common.header_mutation, exchange.request_headers)
            exchange.clear_route_cache |= common.clear_route_cache
            exchange.destination = exchange.request_headers.get(DESTINATION, exchange.destination)
        return True

    async def _upstream(
        self,
        exchange: Exchange,
        path: str,
        stream: Any,
        outbox: asyncio.Queue[ext_proc.ProcessingRequest | None],
    ) -> None:
        forwarded = {k: v for k, v in exchange.request_headers.items() if not k.startswith(":")}
        order = exchange.destination.split(",")  # the first, then the next on failure
        client = self._http or httpx.AsyncClient(timeout=120)
        try:
            for endpoint in order:
                request = client.build_request(
                    "POST", f"http://{endpoint}{path}", content=exchange.body, headers=forwarded
                )
                sent = time.perf_counter()
                try:
                    response = await client.send(request, stream=True)
                except httpx.ConnectError:
                    continue
                exchange.served_by = endpoint
                chunks: list[bytes] = []
                try:
                    async for piece in response.aiter_raw():
                        if not chunks:
                            exchange.ttft = time.perf_counter() - sent
                        chunks.append(piece)
                finally:
                    await response.aclose()
                await self._respond(
                    stream, outbox, exchange, response.status_code, dict(response.headers), chunks
                )
                return
        finally:
            if self._http is None:
                await client.aclose()
        raise AssertionError(f"no endpoint of {exchange.destination!r} answered")

    async def _respond(
        self,
        stream: Any,
        outbox: asyncio.Queue[ext_proc.ProcessingRequest | None],
        exchange: Exchange,
        status: int,
        headers: dict[str, str],
        chunks: list[bytes],
    ) -> None:
        exchange.status = status
        metadata = base_pb2.Metadata()
        if exchange.served_by:
            served = struct_pb2.Struct()
            served.update({"x-gateway-destination-endpoint-served": exchange.served_by})
            metadata.filter_metadata["envoy.lb"].CopyFrom(served)
        exchange.response_headers = {":status": str(status), **headers}
        await outbox.put(ext_proc.ProcessingRequest(
            response_headers=ext_proc.HttpHeaders(headers=_headers(exchange.response_headers)),
            metadata_context=metadata,
        ))  # fmt: skip
        answer = await stream.read()
        _apply(answer.response_headers.response.header_mutation, exchange.response_headers)
        if self._hold_response is not None:
            await self._hold_response.wait()
        chunks = chunks or [b""]
        for i, piece in enumerate(chunks):
            await outbox.put(ext_proc.ProcessingRequest(
                response_body=ext_proc.HttpBody(body=piece, end_of_stream=i == len(chunks) - 1)
            ))  # fmt: skip
            answer = await stream.read()
            if self._mode == MODES.FULL_DUPLEX_STREAMED:
                exchange.response_body += answer.response_body.response.body_mutation.streamed_response.body
            else:
                exchange.response_body += piece

"""Benchmark: llamafleet as a Gateway API Inference Extension endpoint picker (Envoy ext_proc).

    .venv/bin/python bench/picker.py [--requests 2000] [--streams 32] [--conversations 24]

1. The picker's added latency: 32 concurrent ext_proc streams over one gRPC connection (as Envoy
   keeps one to its processor), each a chat request's headers and body (FULL_DUPLEX_STREAMED, 2 KiB:
   one piece, as Envoy reads it) then an empty response; the time from the body to the answer
   carrying the pick, p50/p99. The picker (a process of its own, picking with the
   gateway's balancer among 8 engines of a routing table, prefix affinity) is run against a no-op
   ext_proc processor in the same script, which answers the same phases without picking: the
   difference is what picking adds to the gRPC exchange every ext_proc processor costs.
2. Prefix affinity through the picker against picks blind to the prompt: `llamafleet up` with 2
   SmolLM2 replicas of 2 slots and the picker on, the Model's balancer the default (prefix affinity)
   or round-robin; conversations about a document of their own (~1,100 tokens, under one of 4 system
   prompts), three questions each, 2 conversations at a time, routed the way Envoy routes
   (tests/support/envoy_ext_proc.py) to the picker's pick. Time to the first streamed byte from the
   engine, p50/p90, and the ratios. (A data plane cannot send a request elsewhere than the pick:
   each engine answers only its own request secret, which the pick's headers carry.)

Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import httpx
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc

from bench.latency import percentile
from nodeagent.supervisor.process import free_port
from tests.support.cluster import start_cluster, stop_cluster
from tests.support.envoy_ext_proc import MODES, EnvoyLike, _headers
from tests.support.wait import wait_until

ENGINES = 8
VOCABULARY = ("account", "card", "fee", "transfer", "branch", "loan", "rate", "statement", "balance",
              "the", "of", "and", "a", "to", "is", "for", "on", "with", "annual", "notice")  # fmt: skip
CHUNK = 16 * 1024  # Envoy reads a request body in pieces of its buffer: a 2 KiB body is one piece
SYSTEMS = [f"You are assistant number {i} of a large bank's support desk; answer in one sentence. " * 12
           for i in range(4)]  # fmt: skip


# --- the servers, each in a process of its own ---------------------------------------------------
def serve_picker(port: int) -> None:
    from prometheus_client import CollectorRegistry

    from controlplane.domain import Endpoint, ModelRoute, RoutingTable
    from controlplane.gateway.balancer.balancer import Balancer
    from controlplane.gateway.balancer.state import InProcessState
    from controlplane.gateway.metrics import GatewayMetrics
    from controlplane.gateway.picker.server import serve_picker as serve

    engines = tuple(
        Endpoint(f"r{i}", "node", f"http://10.0.0.{i + 1}:8000", True, secret="s") for i in range(ENGINES)
    )
    table = RoutingTable(1, {"smol": ModelRoute("smol", 1000, 2048, engines, balancer="prefix-affinity")})
    balancer = Balancer(InProcessState(), GatewayMetrics(CollectorRegistry()))
    asyncio.run(
        serve("127.0.0.1", port, lambda: table, lambda: True, balancer, balancer._metrics, asyncio.Event())
    )


class NoOp(ext_proc_grpc.ExternalProcessorServicer):
    """Answers every phase as a processor that changes nothing would (echoing duplex bodies)."""

    async def Process(self, requests: Any, context: Any) -> Any:  # noqa: N802
        held: list[ext_proc.ProcessingRequest] = []
        async for message in requests:
            kind = message.WhichOneof("request")
            if kind == "request_headers" and not message.request_headers.end_of_stream:
                continue
            if kind == "request_body":
                held.append(message)
                if not message.request_body.end_of_stream:
                    continue
                yield ext_proc.ProcessingResponse(request_headers=ext_proc.HeadersResponse())
                for chunk in held:
                    yield ext_proc.ProcessingResponse(request_body=echo(chunk.request_body))
            elif kind == "response_headers":
                yield ext_proc.ProcessingResponse(response_headers=ext_proc.HeadersResponse())
            elif kind == "response_body":
                yield ext_proc.ProcessingResponse(response_body=echo(message.response_body))


def echo(body: ext_proc.HttpBody) -> ext_proc.BodyResponse:
    """A duplex body chunk given back unchanged."""
    streamed = ext_proc.StreamedBodyResponse(body=body.body, end_of_stream=body.end_of_stream)
    mutation = ext_proc.BodyMutation(streamed_response=streamed)
    return ext_proc.BodyResponse(response=ext_proc.CommonResponse(body_mutation=mutation))


def serve_noop(port: int) -> None:
    async def run() -> None:
        server = grpc.aio.server()
        ext_proc_grpc.add_ExternalProcessorServicer_to_server(NoOp(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(run())


# --- part 1: latency ------------------------------------------------------------------------------
async def exchange(stub: Any, body: bytes) -> float:
    """One request's phases through ``stub``; seconds from the last body chunk to the pick's answer."""
    outbox: asyncio.Queue[ext_proc.ProcessingRequest | None] = asyncio.Queue()

    async def requests() -> Any:
        while (message := await outbox.get()) is not None:
            yield message

    stream = stub.Process(requests())
    first = ext_proc.ProcessingRequest(request_headers=ext_proc.HttpHeaders(
        headers=_headers({":method": "POST", ":path": "/v1/chat/completions"})))  # fmt: skip
    first.protocol_config.request_body_mode = MODES.FULL_DUPLEX_STREAMED
    first.protocol_config.response_body_mode = MODES.FULL_DUPLEX_STREAMED
    await outbox.put(first)
    pieces = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    for piece in pieces[:-1]:
        await outbox.put(ext_proc.ProcessingRequest(request_body=ext_proc.HttpBody(body=piece)))
    sent = time.perf_counter()
    await outbox.put(
        ext_proc.ProcessingRequest(request_body=ext_proc.HttpBody(body=pieces[-1], end_of_stream=True))
    )
    answered = 0.0
    while True:
        answer = await stream.read()
        kind = answer.WhichOneof("response")
        if kind == "request_headers" and not answered:
            answered = time.perf_counter() - sent
        if kind == "immediate_response":
            raise RuntimeError(f"refused: {answer.immediate_response.body!r}")
        if (
            kind == "request_body"
            and answer.request_body.response.body_mutation.streamed_response.end_of_stream
        ):
            break
    await outbox.put(
        ext_proc.ProcessingRequest(
            response_headers=ext_proc.HttpHeaders(headers=_headers({":status": "200"}))
        )
    )
    await stream.read()
    await outbox.put(
        ext_proc.ProcessingRequest(response_body=ext_proc.HttpBody(body=b"{}", end_of_stream=True))
    )
    await stream.read()
    await outbox.put(None)
    return answered


async def latency(address: str, requests: int, streams: int) -> list[float]:
    async with grpc.aio.insecure_channel(address) as channel:  # one connection, many streams: Envoy's way
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = ext_proc_grpc.ExternalProcessorStub(channel)
        bodies = [
            json.dumps(
                {
                    "model": "smol",
                    "messages": [
                        {"role": "system", "content": SYSTEMS[i % 4]},
                        {"role": "user", "content": f"Question {i}? " + "more words " * 70},
                    ],
                }
            ).encode()
            for i in range(64)
        ]  # fmt: skip (about 2 KiB each)
        samples: list[float] = []
        counter = iter(range(requests))

        async def worker() -> None:
            for i in counter:
                samples.append(await exchange(stub, bodies[i % len(bodies)]))

        for _ in range(streams):  # warm the connection and both sides
            await exchange(stub, bodies[0])
        await asyncio.gather(*(worker() for _ in range(streams)))
    return samples


# --- part 2: affinity through the picker -----------------------------------------------------------
async def conversations(picker: str, count: int, tag: str) -> list[float]:
    """TTFTs of ``count`` conversations; each routing's documents are its own (``tag``), so neither
    finds the other's in the engines' caches."""
    http = httpx.AsyncClient(timeout=120)
    envoy = EnvoyLike(picker, http=http)
    ttfts: list[float] = []

    async def converse(i: int) -> None:
        # A document of its own pasted into each conversation (a contract, a log, a report: ~1,000
        # tokens), then questions about it: where its turns go decides whether it is computed again.
        document = f"Document {i} ({tag}): " + " ".join(
            random.Random(f"{tag}-{i}").choices(VOCABULARY, k=900)
        )
        messages: list[dict[str, str]] = [
            {"role": "system", "content": SYSTEMS[i % 4]},
            {"role": "user", "content": document},
            {"role": "assistant", "content": "I have read it."},
        ]
        for turn in range(3):
            messages.append({"role": "user", "content": f"Question {turn}: what does it say about fees?"})
            body = {"model": "smol", "max_tokens": 8, "temperature": 0, "stream": True, "messages": messages}
            exchange = await envoy.route(body, upstream=True)
            assert exchange.status == 200, exchange.response_body[:300]
            ttfts.append(exchange.ttft)
            messages.append({"role": "assistant", "content": "Your card is safe with us."})

    queue = list(range(count))

    async def worker() -> None:
        while queue:
            await converse(queue.pop(0))

    try:
        await asyncio.gather(worker(), worker())  # two conversations at a time
    finally:
        await http.aclose()
    return ttfts


MODELS = """
models:
  - name: smol
    source: builtin:smollm2-135m
    replicas: 2
    contextLength: 2048
    parallelSlots: 2
    threads: 1
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="ext_proc exchanges per processor")
    parser.add_argument("--streams", type=int, default=32, help="concurrent ext_proc streams")
    parser.add_argument(
        "--conversations", type=int, default=24, help="conversations per routing (3 turns each)"
    )
    parser.add_argument("--serve", choices=("picker", "noop"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        (serve_picker if args.serve == "picker" else serve_noop)(args.port)
        return
    result: dict[str, Any] = {"bench": "picker", "streams": args.streams, "requests": args.requests}
    servers = {}
    for name in ("picker", "noop"):
        port = free_port("127.0.0.1")
        servers[name] = (
            port,
            subprocess.Popen([sys.executable, __file__, "--serve", name, "--port", str(port)]),
        )
    try:
        for name, (port, _) in servers.items():
            samples = asyncio.run(latency(f"127.0.0.1:{port}", args.requests, args.streams))
            result[f"{name}_p50_ms"] = round(1000 * statistics.median(samples), 3)
            result[f"{name}_p99_ms"] = round(1000 * percentile(samples, 0.99), 3)
            print(
                f"picker: {name}: {result[f'{name}_p50_ms']} ms p50, {result[f'{name}_p99_ms']} ms p99",
                flush=True,
            )
    finally:
        for _, process in servers.values():
            process.terminate()
            process.wait(timeout=30)
    result["picking_added_p50_ms"] = round(result["picker_p50_ms"] - result["noop_p50_ms"], 3)
    result["picking_added_p99_ms"] = round(result["picker_p99_ms"] - result["noop_p99_ms"], 3)
    rows = {}
    for policy in ("prefix-affinity", "round-robin"):  # the default, and picks blind to the prompt
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port("127.0.0.1")
            models = MODELS + f"    balancer: {policy}\n"
            cluster = start_cluster(Path(tmp), models, ["smol"], ("--gateway-picker-port", str(port)),
                                    short_intervals=False)  # fmt: skip
            try:
                picker = f"127.0.0.1:{port}"
                both = lambda c=cluster: any(m["ready_replicas"] == 2 for m in c.models_json())  # noqa: E731
                wait_until(both, 120, "both replicas")
                asyncio.run(conversations(picker, 2, "warm"))  # both engines, documents of neither run
                ttfts = asyncio.run(conversations(picker, args.conversations, policy))
                rows[policy] = {
                    "ttft_p50_ms": round(1000 * statistics.median(ttfts), 1),
                    "ttft_p90_ms": round(1000 * percentile(ttfts, 0.9), 1),
                    "requests": len(ttfts),
                }
                print(f"picker: affinity {policy}: {rows[policy]}", flush=True)
            finally:
                stop_cluster(cluster)
    result["affinity"] = rows
    blind, affinity = rows["round-robin"], rows["prefix-affinity"]
    result["ttft_p50_round_robin_over_affinity"] = round(blind["ttft_p50_ms"] / affinity["ttft_p50_ms"], 3)
    result["ttft_p90_round_robin_over_affinity"] = round(blind["ttft_p90_ms"] / affinity["ttft_p90_ms"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

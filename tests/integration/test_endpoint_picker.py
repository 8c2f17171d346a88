"""The gateway as a GIE endpoint picker: Envoy's ext_proc protocol over real gRPC, driven the way Envoy
drives it (tests/support/envoy_ext_proc.py), picking with the real balancer among a routing table's
engines: the pick with fallbacks in the header and the metadata alike, both body modes, the subset
hint, 503, 429, 404, 400, the served endpoint read back, slots given back, gRPC health."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from controlplane.domain import Endpoint, ModelRoute, RoutingTable
from controlplane.gateway.balancer.balancer import Balancer
from controlplane.gateway.balancer.state import InProcessState
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.picker.server import serve_picker
from tests.support.envoy_ext_proc import MODES, EnvoyLike
from tests.support.ports import server_port

pytestmark = pytest.mark.integration

ENGINES = ("10.0.0.1:8001", "10.0.0.2:8001", "10.0.0.3:8001")
SYSTEM = "You are the support desk of a large bank. " * 60


def chat(question: str, model: str = "smol") -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
    }


def table(slots: int = 4, ready: bool = True, secrets: bool = False) -> RoutingTable:
    """Engines without request secrets (fallbacks are offered), or each with its own (the agents' way:
    no fallback could answer the pick's secret)."""
    engines = tuple(
        Endpoint(f"r{i}", "node", f"http://{address}", ready, ("noisy",) if i == 2 else (),
                 secret=f"secret-{i}" if secrets else "")
        for i, address in enumerate(ENGINES)
    )  # fmt: skip
    return RoutingTable(1, {"smol": ModelRoute("smol", slots, 2048, engines, balancer="prefix-affinity")})


@dataclass
class Picker:
    address: str
    balancer: Balancer
    routes: list[RoutingTable]  # [0] is in force; tests replace it
    has_table: list[bool]

    async def in_flight(self) -> dict[str, int]:
        return await self.balancer.state.in_flight(["r0", "r1", "r2"])


@pytest.fixture
async def picker() -> AsyncIterator[Picker]:
    port = server_port()
    balancer = Balancer(
        InProcessState(), GatewayMetrics(CollectorRegistry()), queue_limit=0, queue_timeout_s=1
    )
    running = Picker(f"127.0.0.1:{port}", balancer, [table()], [True])
    stop = asyncio.Event()
    task = asyncio.create_task(serve_picker(
        "127.0.0.1", port, lambda: running.routes[0], lambda: running.has_table[0], balancer,
        balancer._metrics, stop,
    ))  # fmt: skip
    async with grpc.aio.insecure_channel(running.address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 20)
    yield running
    stop.set()
    await task


async def in_flight(picker: Picker, total: int) -> None:
    """Until ``total`` requests are in flight over the engines (polled: nothing to wait on)."""
    for _ in range(1000):
        if sum((await picker.in_flight()).values()) == total:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never {total} request(s) in flight: {await picker.in_flight()}")


async def test_a_pick_names_its_engine_and_fallbacks_alike_in_the_header_and_the_metadata(
    picker: Picker,
) -> None:
    envoy = EnvoyLike(picker.address)
    body = chat("Where is my card?")
    exchange = await envoy.route(body, chunk=100)  # the body in 100-byte chunks, sent without waiting
    picks = exchange.destination.split(",")
    assert sorted(picks[1:]) == sorted(set(ENGINES) - {picks[0]})  # fallbacks: the other engines
    assert exchange.metadata == {"envoy.lb": {"x-gateway-destination-endpoint": exchange.destination}}
    assert exchange.clear_route_cache
    assert exchange.body == json.dumps(body).encode()  # given back whole, unchanged
    index = ENGINES.index(picks[0])
    assert "authorization" not in exchange.request_headers  # engines without a secret here
    assert exchange.request_headers["x-llamafleet-tenant"] == "anonymous"
    assert exchange.response_headers["x-llamafleet-replica"] == f"r{index}"
    assert exchange.response_body == b"{}"  # echoed back in duplex mode
    assert await picker.in_flight() == {"r0": 0, "r1": 0, "r2": 0}  # given back when the response ended
    # The prompt's blocks are where the pick sent them: the next question under the system prompt
    # goes there too, through a new connection.
    again = await envoy.route(chat("And my account?"))
    assert again.destination.split(",")[0] == picks[0]


async def test_engines_with_their_own_secrets_get_the_picks_and_no_fallback(picker: Picker) -> None:
    picker.routes[0] = table(secrets=True)
    exchange = await EnvoyLike(picker.address).route(chat("Where is my card?"))
    (pick,) = exchange.destination.split(",")  # no other engine answers this engine's secret
    assert exchange.request_headers["authorization"] == f"Bearer secret-{ENGINES.index(pick)}"


async def test_buffered_mode_and_an_envoy_that_does_not_announce_its_mode(picker: Picker) -> None:
    buffered = await EnvoyLike(picker.address, MODES.BUFFERED).route(chat("Hello?"))
    assert buffered.destination.split(",")[0] in ENGINES
    assert buffered.metadata["envoy.lb"]["x-gateway-destination-endpoint"] == buffered.destination
    silent = await EnvoyLike(picker.address, announce=False).route(chat("Hello?"), chunk=7)  # duplex: GIE's
    assert silent.destination == buffered.destination
    assert await picker.in_flight() == {"r0": 0, "r1": 0, "r2": 0}


async def test_the_subset_hint_bounds_the_pick_and_an_empty_or_foreign_one_is_a_503(picker: Picker) -> None:
    envoy = EnvoyLike(picker.address)
    for only in ENGINES[:2]:
        exchange = await envoy.route(chat("Where is my card?"), subset=[only])
        assert exchange.destination == only  # the pick, and no fallback outside the subset
    for subset in ([], ["10.9.9.9:8001"]):
        refused = await envoy.route(chat("Where is my card?"), subset=subset)
        assert refused.immediate_status == 503
        assert "subset" in refused.immediate_json["error"]["message"]


async def test_an_adapter_is_picked_only_where_it_is_loaded(picker: Picker) -> None:
    for _ in range(3):
        exchange = await EnvoyLike(picker.address).route(chat("Hi", model="smol:noisy"))
        assert exchange.destination == ENGINES[2]


async def test_no_ready_engine_is_a_503_an_unknown_model_a_404_and_a_broken_body_a_400(
    picker: Picker,
) -> None:
    envoy = EnvoyLike(picker.address)
    unknown = await envoy.route(chat("Hi", model="gpt-9"))
    assert unknown.immediate_status == 404
    assert unknown.immediate_json["error"]["code"] == "model_not_found"
    broken = await envoy.route(b"{not json")
    assert broken.immediate_status == 400
    picker.routes[0] = table(ready=False)
    none = await envoy.route(chat("Hi"))
    assert none.immediate_status == 503
    headers = {h.header.key: h.header.raw_value for h in none.immediate.headers.set_headers}  # type: ignore[union-attr]
    assert headers["retry-after"] == b"1"
    assert none.immediate_json["error"]["type"]  # OpenAI's error envelope


async def test_a_full_pool_is_a_429_with_retry_after_and_a_held_slot_counts(picker: Picker) -> None:
    picker.routes[0] = table(slots=1)
    envoy = EnvoyLike(picker.address)
    hold = asyncio.Event()
    held = [asyncio.create_task(envoy.route(chat(f"Long question {i}"), hold=hold)) for i in range(3)]
    await in_flight(picker, 3)  # every engine's one slot taken, the streams open
    refused = await envoy.route(chat("One more"))
    assert refused.immediate_status == 429  # the queue limit is 0 here
    assert refused.immediate_json["error"]["code"] == "queue_full"
    hold.set()
    await asyncio.gather(*held)
    assert await picker.in_flight() == {"r0": 0, "r1": 0, "r2": 0}


async def test_a_request_a_fallback_served_moves_its_slot_there(picker: Picker) -> None:
    envoy = EnvoyLike(picker.address)
    first = (await envoy.route(chat("Where is my card?"))).destination.split(",")
    primary, fallback = ENGINES.index(first[0]), ENGINES.index(first[1])
    in_response = asyncio.Event()
    done = asyncio.create_task(
        envoy.route(chat("Where is my card?"), served=first[1], hold_response=in_response)
    )
    expected = {"r0": 0, "r1": 0, "r2": 0} | {f"r{fallback}": 1}
    for _ in range(250):  # the data plane said the fallback served it: counted there, not on the pick
        if await picker.in_flight() == expected:
            break
        await asyncio.sleep(0.02)
    assert await picker.in_flight() == expected, f"primary r{primary}"
    in_response.set()
    await done
    assert await picker.in_flight() == {"r0": 0, "r1": 0, "r2": 0}
    metrics = picker.balancer._metrics.picker_requests
    assert metrics.labels("fallback_served")._value.get() == 1


async def test_a_stream_the_client_leaves_gives_its_slot_back(picker: Picker) -> None:
    hold = asyncio.Event()
    route = asyncio.create_task(EnvoyLike(picker.address).route(chat("Bye"), hold=hold))
    await in_flight(picker, 1)
    route.cancel()  # the data plane drops the stream (its client went away)
    await asyncio.gather(route, return_exceptions=True)
    await in_flight(picker, 0)  # the dropped stream's slot given back


async def test_health_liveness_and_readiness_follow_the_routing_table(picker: Picker) -> None:
    async def status(service: str) -> int:
        async with grpc.aio.insecure_channel(picker.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            return int(answer.status)

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"):
        assert await status(service) == serving
    picker.has_table[0] = False  # e.g. the control plane unreachable since start
    for _ in range(100):
        if await status("readiness") == not_serving:
            break
        await asyncio.sleep(0.05)
    assert await status("readiness") == not_serving
    assert await status("liveness") == serving

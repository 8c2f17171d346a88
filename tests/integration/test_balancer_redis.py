"""Balancer state through a real redis-server: two gateways share load, prompt blocks and sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from controlplane.domain import Endpoint, ModelRoute, RoutingTable
from controlplane.gateway.balancer.balancer import Balancer
from controlplane.gateway.balancer.fair_queue import Tenancy
from controlplane.gateway.balancer.redis_state import RETRY_S, RedisState
from controlplane.gateway.balancer.request_keys import RequestKeys
from controlplane.gateway.metrics import GatewayMetrics
from tests.support.block_holding import check_block_holding
from tests.support.redis_server import redis_server

pytestmark = pytest.mark.integration


@pytest.fixture
async def two_gateways(tmp_path: Path) -> AsyncIterator[tuple[RedisState, RedisState]]:
    with redis_server(tmp_path) as url:
        a = await RedisState.connect(url, "gateway-a")
        b = await RedisState.connect(url, "gateway-b")
        yield a, b
        await a.close()
        await b.close()


async def test_load_owners_and_sessions_are_shared(two_gateways: tuple[RedisState, RedisState]) -> None:
    a, b = two_gateways
    await a.acquire("r1")
    await a.acquire("r1")
    await b.acquire("r1")
    await b.acquire("r2")
    assert await a.in_flight(["r1", "r2", "r3"]) == {"r1": 3, "r2": 1, "r3": 0}
    await a.release("r1")
    assert (await b.in_flight(["r1"]))["r1"] == 2
    await a.remember("session", "k1", "r2", 60)
    assert await b.owner("session", "k1") == "r2"
    await a.hold(("x", "y"), "r2", 60)
    assert await b.held(("x", "y", "z")) == {"r2": 2}  # what one gateway sent, the other knows


async def test_prompt_blocks_held_in_redis_count_as_in_one_gateway(
    two_gateways: tuple[RedisState, RedisState],
) -> None:
    await check_block_holding(two_gateways[0])


async def test_a_dead_gateways_counts_vanish(two_gateways: tuple[RedisState, RedisState]) -> None:
    a, b = two_gateways
    await a.acquire("r1")
    assert (await b.in_flight(["r1"]))["r1"] == 1
    # gateway-a stops heartbeating (it died): its last beat ages past the TTL
    await a._client.zadd("lf:gateways", {"gateway-a": time.time() - 3600})
    assert (await b.in_flight(["r1"]))["r1"] == 0


async def test_a_request_queued_on_one_gateway_takes_the_slot_freed_on_the_other(
    two_gateways: tuple[RedisState, RedisState],
) -> None:
    a, b = two_gateways
    endpoint = Endpoint("r1", "node", "http://r1", True)
    table = RoutingTable(1, {"m": ModelRoute("m", 1, 2048, (endpoint,))})
    gw_a = Balancer(a, GatewayMetrics(CollectorRegistry()), queue_timeout_s=5)
    gw_b = Balancer(b, GatewayMetrics(CollectorRegistry()), queue_timeout_s=5)
    assert await gw_a.acquire(lambda: table, "m", None, RequestKeys(), set()) == endpoint
    waiting = asyncio.create_task(gw_b.acquire(lambda: table, "m", None, RequestKeys(), set()))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # the only slot is taken, through the other gateway
    await gw_a.release("m", endpoint)
    assert await asyncio.wait_for(waiting, 2) == endpoint


async def test_a_wrong_redis_url_fails_at_start_with_what_to_check() -> None:
    with pytest.raises(OSError, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0"):
        await RedisState.connect("redis://127.0.0.1:1/0", "gw")


async def test_two_gateways_never_take_more_slots_than_a_replica_has(
    two_gateways: tuple[RedisState, RedisState],
) -> None:
    a, b = two_gateways
    tries = [gateway.try_acquire("r1", 3) for _ in range(10) for gateway in (a, b)]
    taken = await asyncio.gather(*tries)
    assert sum(taken) == 3  # reading the load and taking the slot are one step in Redis
    assert (await a.in_flight(["r1"]))["r1"] == 3


async def test_without_redis_a_gateway_serves_on_its_own_counts_and_resyncs_when_it_returns(
    tmp_path: Path,
) -> None:
    health: list[bool] = []
    with redis_server(tmp_path) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        a = await RedisState.connect(url, "gateway-a", health.append)
        assert await a.try_acquire("r1", 2)
    # Redis is gone (and will come back empty): the gateway keeps balancing on its own counts.
    assert await a.try_acquire("r1", 2)
    assert not await a.try_acquire("r1", 2)  # its own two requests fill the replica's two slots
    assert await a.in_flight(["r1"]) == {"r1": 2}
    await a.release("r1")
    assert health == [True, False]
    with redis_server(tmp_path, port) as url:
        b = await RedisState.connect(url, "gateway-b")
        await asyncio.sleep(RETRY_S)  # the gateway tries Redis again this often
        assert await a.in_flight(["r1"]) == {"r1": 1}  # back on Redis: its one request re-synced
        assert health == [True, False, True]
        assert await b.in_flight(["r1"]) == {"r1": 1}  # and the other gateway sees it
        assert await b.try_acquire("r1", 2)
        assert not await a.try_acquire("r1", 2)
        await a.close()
        await b.close()


async def test_two_gateways_share_fairness_a_flood_at_one_does_not_overtake_a_request_at_the_other(
    two_gateways: tuple[RedisState, RedisState],
) -> None:
    """Tenant A floods gateway a, tenant B asks once at gateway b; slots free only at gateway a (A's
    requests end there), where A's backlog would take every one of them first if each gateway kept
    its own order: B's request must be served within the first two slots freed."""
    a, b = two_gateways
    endpoint = Endpoint("r1", "node", "http://r1", True)
    table = RoutingTable(1, {"m": ModelRoute("m", 1, 2048, (endpoint,))})
    gw_a = Balancer(a, GatewayMetrics(CollectorRegistry()), queue_timeout_s=20)
    gw_b = Balancer(b, GatewayMetrics(CollectorRegistry()), queue_timeout_s=20)

    async def take(gateway: Balancer, tenant: str) -> str:
        await gateway.acquire(lambda: table, "m", None, RequestKeys(), set(), Tenancy(tenant))
        return tenant

    await take(gw_a, "A")
    flood = [asyncio.create_task(take(gw_a, "A")) for _ in range(20)]
    await asyncio.sleep(0.3)
    late = asyncio.create_task(take(gw_b, "B"))
    await asyncio.sleep(0.3)
    order: list[str] = []
    pending = {*flood, late}
    for _ in range(3):
        holder = gw_b if order[-1:] == ["B"] else gw_a  # A's slots free at gateway a
        await holder.release("m", endpoint)
        done, pending = await asyncio.wait(pending, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1, f"no request took the slot freed after {order}"
        order.append(done.pop().result())
    assert "B" in order[:2], order
    assert order.count("A") == 2  # and then A's backlog goes on
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    assert await a._client.zcard("lf:fq:wait:gateway-a:m") == 0  # who left the line left the set too

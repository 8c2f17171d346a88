"""Fair queuing between tenants in the gateway's balancer (balancer/fair_queue.py): weights, priorities,
shedding, per-tenant bounds and time-to-first-token objectives, on the real Balancer with in-process
state. A model with one replica of one slot: every admission after the first waits for a release,
so the order of admissions is the queue's order."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from controlplane.domain import Endpoint, ModelRoute, RoutingTable
from controlplane.gateway.access.api_keys import ApiKey
from controlplane.gateway.access.tenancy import tenancy_of
from controlplane.gateway.balancer.balancer import Balancer, Grant, preemptible, tenant_slot
from controlplane.gateway.balancer.fair_queue import Priority, Tenancy
from controlplane.gateway.balancer.request_keys import RequestKeys
from controlplane.gateway.balancer.state import InProcessState
from controlplane.gateway.metrics import GatewayMetrics
from llamafleet.core.errors import Forbidden, InvalidRequest, Overloaded

REPLICA = Endpoint("r1", "node", "http://r1", True)
TABLE = RoutingTable(1, {"m": ModelRoute("m", 1, 2048, (REPLICA,))})


def balancer(**kw: object) -> Balancer:
    return Balancer(InProcessState(), GatewayMetrics(CollectorRegistry()), **kw)  # type: ignore[arg-type]


async def take(b: Balancer, tenancy: Tenancy) -> str:
    await b.acquire(lambda: TABLE, "m", None, RequestKeys(), set(), tenancy)
    return tenancy.tenant


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def admissions(b: Balancer, waiting: list[asyncio.Task[str]], count: int) -> list[str]:
    """Release the slot ``count`` times; who got it each time."""
    order: list[str] = []
    pending = set(waiting)
    for _ in range(count):
        await b.release("m", REPLICA)
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1
        order.append(done.pop().result())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return order


async def test_a_flooding_tenant_delays_another_by_one_turn_not_by_its_backlog() -> None:
    b = balancer(queue_limit=500)
    await take(b, Tenancy("a"))  # the slot is busy
    flood = [asyncio.create_task(take(b, Tenancy("a"))) for _ in range(64)]
    await settle()
    late = asyncio.create_task(take(b, Tenancy("b")))  # arrives behind 64 of a's
    await settle()
    order = await admissions(b, [*flood, late], 3)
    assert "b" in order[:2], order  # first come first served would make it the 65th


async def test_weights_are_honoured_within_ten_percent_over_200_requests() -> None:
    b = balancer(queue_limit=1000)
    await take(b, Tenancy("a", weight=3))
    heavy = [asyncio.create_task(take(b, Tenancy("a", weight=3))) for _ in range(300)]
    light = [asyncio.create_task(take(b, Tenancy("b", weight=1))) for _ in range(300)]
    await settle()
    served = Counter(await admissions(b, [*heavy, *light], 200))
    assert abs(served["a"] - 150) <= 15, served
    assert abs(served["b"] - 50) <= 5, served


async def test_higher_priorities_go_first_then_fairness_within_each() -> None:
    b = balancer(queue_limit=100)
    await take(b, Tenancy("a"))
    arrivals: list[tuple[str, Priority]] = [
        ("low", "sheddable"), ("std", "standard"), ("top", "critical"), ("std2", "standard")
    ]  # fmt: skip
    tasks = [asyncio.create_task(take(b, Tenancy(name, priority=p))) for name, p in arrivals]
    await settle()
    assert await admissions(b, tasks, 4) == ["top", "std", "std2", "low"]


async def test_a_full_queue_sheds_a_sheddable_request_for_a_more_urgent_one() -> None:
    b = balancer(queue_limit=2)
    await take(b, Tenancy("a"))
    shed = asyncio.create_task(take(b, Tenancy("batch", priority="sheddable")))
    kept = asyncio.create_task(take(b, Tenancy("b")))
    await settle()
    with pytest.raises(Overloaded, match="sheddable requests are refused first"):
        await take(b, Tenancy("batch", priority="sheddable"))  # no room, and nothing it outranks
    urgent = asyncio.create_task(take(b, Tenancy("c", priority="critical")))
    await settle()
    with pytest.raises(Overloaded, match="shed: a critical request took this sheddable request's place"):
        await shed
    assert await admissions(b, [kept, urgent], 2) == ["c", "b"]


async def test_one_tenant_is_bounded_and_the_429_names_the_bound() -> None:
    b = balancer(queue_limit=100, tenant_queue_limit=3)
    await take(b, Tenancy("a"))
    waiting = [asyncio.create_task(take(b, Tenancy("a"))) for _ in range(3)]
    await settle()
    with pytest.raises(Overloaded, match="per-tenant queue bound") as refused:
        await take(b, Tenancy("a"))
    assert refused.value.retry_after > 0
    other = asyncio.create_task(take(b, Tenancy("b")))  # another tenant still gets in line
    await settle()
    assert "b" in await admissions(b, [*waiting, other], 2)


async def test_a_request_whose_objective_the_wait_would_miss_is_refused_at_once() -> None:
    b = balancer(queue_limit=100)
    await take(b, Tenancy("a"))
    for _ in range(4):  # a measured service rate: four completions (and admissions) in a row
        await b.release("m", REPLICA)
        await take(b, Tenancy("a"))
    rate = b.service_rate("m")
    assert rate > 0
    backlog = [asyncio.create_task(take(b, Tenancy("a"))) for _ in range(10)]
    await settle()
    wait = 11 / rate  # ten ahead of it (a's, and it is a's turn after them) plus itself
    with pytest.raises(Overloaded, match="predicted wait") as refused:
        await take(b, Tenancy("a", ttft_objective_s=wait / 4))
    assert "objective" in refused.value.message
    patient = asyncio.create_task(take(b, Tenancy("a", ttft_objective_s=wait * 4)))
    await settle()
    assert not patient.done()  # it waits in line instead
    for task in [*backlog, patient]:
        task.cancel()
    await asyncio.gather(*backlog, patient, return_exceptions=True)


def test_tenancy_comes_from_the_key_and_only_the_headers_it_allows() -> None:
    key = ApiKey(name="search-app", sha256="a" * 64, tenant="search", weight=2, priorities=("sheddable",))
    assert tenancy_of(key, {}) == Tenancy("search", 2.0, "standard", 0.0)
    assert tenancy_of(key, {"x-llamafleet-priority": "sheddable"}).priority == "sheddable"
    assert tenancy_of(key, {"x-slo-ttft-ms": "1500"}).ttft_objective_s == 1.5
    with pytest.raises(Forbidden, match="may not ask for priority 'critical'"):
        tenancy_of(key, {"x-llamafleet-priority": "critical"})
    with pytest.raises(Forbidden, match="may not name a tenant"):
        tenancy_of(key, {"x-llamafleet-tenant": "other"})
    with pytest.raises(InvalidRequest):
        tenancy_of(key, {"x-llamafleet-ttft-objective-ms": "soon"})
    upstream = ApiKey(name="edge", sha256="b" * 64, tenant_header=True)
    assert tenancy_of(upstream, {}).tenant == "edge"
    assert tenancy_of(upstream, {"x-llamafleet-tenant": "team-x"}).tenant == "team-x"
    with pytest.raises(InvalidRequest):
        tenancy_of(upstream, {"x-llamafleet-tenant": "no spaces"})


# --- preemption: a tenant with nothing in flight beside one over its share --------------------------

TWO_SLOTS = RoutingTable(1, {"m": ModelRoute("m", 2, 2048, (REPLICA,))})


async def grant_for(b: Balancer, tenancy: Tenancy) -> Grant:
    grant = Grant()
    await b.acquire(lambda: TWO_SLOTS, "m", None, RequestKeys(), set(), tenancy, grant)
    return grant


async def test_an_idle_tenant_preempts_the_tenant_over_its_share_at_once() -> None:
    b = balancer()
    flood = [await grant_for(b, Tenancy("a")) for _ in range(2)]  # both slots
    assert [g.preempts for g in flood] == ["", ""]
    waiting = asyncio.create_task(grant_for(b, Tenancy("a")))  # a's third waits its turn
    await settle()
    assert not waiting.done()
    interactive = await grant_for(b, Tenancy("b"))  # no slot is free, yet b goes now
    assert not waiting.done()  # now: not after a's third, first in line before, has timed out
    assert interactive.tenant == "b"
    assert interactive.preempts == "a"
    assert (await b.state.in_flight(["r1"]))["r1"] == 3  # 2 slots + 1 suspended: preemptible(2) == 1
    assert preemptible(2) == 1
    late = asyncio.create_task(grant_for(b, Tenancy("c")))  # past slots + preemptible: c waits
    await settle()
    assert not late.done()
    await b.release("m", REPLICA, interactive)
    assert (await asyncio.wait_for(late, 5)).preempts == "a"  # a still holds 2 of 2 slots; c has none
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_no_preemption_for_a_tenant_already_served_sheddable_or_within_share() -> None:
    b = balancer()
    a = await grant_for(b, Tenancy("a"))
    b_first = await grant_for(b, Tenancy("b"))  # a free slot: no preemption needed
    assert (a.preempts, b_first.preempts) == ("", "")
    for tenancy in (Tenancy("b"), Tenancy("c", priority="sheddable"), Tenancy("c")):
        # b has a request in flight; sheddable never preempts; a and b each hold their share (1 of 2)
        task = asyncio.create_task(grant_for(b, tenancy))
        await settle()
        assert not task.done(), tenancy
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_tenant_counts_follow_release_so_a_drained_flood_is_no_longer_preempted() -> None:
    b = balancer()
    flood = [await grant_for(b, Tenancy("a")) for _ in range(2)]
    for grant in flood:
        await b.release("m", REPLICA, grant)
    assert (await b.state.in_flight([tenant_slot("m", "a")]))[tenant_slot("m", "a")] == 0
    assert (await grant_for(b, Tenancy("b"))).preempts == ""  # a free slot again


async def test_weights_set_the_shares_preemption_protects() -> None:
    b = balancer()
    for _ in range(2):
        await grant_for(b, Tenancy("a", weight=1))
    # b's weight 3 gives it a share of 1.5 of 2 slots, a's 0.5: a holding 2 is over by 1.5
    assert (await grant_for(b, Tenancy("b", weight=3))).preempts == "a"

"""Balancer: per request, filter → policy → pick; when every replica is busy, queue with bounds.

Filter: ready replicas of the model that serve the requested LoRA adapter, not excluded (already
tried for this request), with a free slot (requests in flight below the model's parallel
slots). The model's policy (or the gateway's default) picks among them. When all are busy the
request waits in the model's queue (``fair_queue.py``): by priority, then in turn between tenants
(weighted fair queuing), first come first served within a tenant; only the first in line takes a
slot. Past ``queue_limit`` waiting requests (or ``tenant_queue_limit`` of one tenant) it is refused
at once (429, Retry-After, the bound named; a waiting sheddable request gives its place to a more
urgent one), past ``queue_timeout_s`` of waiting it gives up (429, Retry-After: the pool is
saturated), and a request with a time-to-first-token objective is refused at once when its
predicted wait (the requests ahead of it over the model's measured completions per second) already
exceeds it. A request is woken when a slot frees here, and polls for slots freed through another
gateway (Redis, which also shares the tenants' virtual times and who waits: ``redis_state.py``).

Preemption: when every slot is taken and the first in line is a tenant with nothing in flight on the
model while another tenant holds a request more than its weighted share of the model's slots, the
request goes to an engine anyway (up to ``preemptible`` requests past a replica's slots; the replica
where this gateway placed most of that tenant's requests) with the over-share tenant named
(``x-llamafleet-preempts``): the engine suspends that tenant's most recent request, its cells saved
to host memory, and resumes it exactly when a slot frees. So an interactive team's request starts at
once beside a flood instead of after a slot turn. Tenants' requests in flight are counted where the
slot counts are (Redis: across gateways, among the tenants this gateway has seen).

An autoscaled model with no ready replica (at zero, or all starting) holds the request in the same
queue until one is ready, up to the route's ``hold_s`` (503 with Retry-After after that); the first
held request wakes the load reporter at once, so the control plane starts replicas for what waits.
The balancer also keeps this gateway's load per model (requests in engines, queued, the last
request's time): the autoscaler's signal (controlplane/gateway/load_report.py sends it).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from controlplane.domain import Endpoint, ModelRoute, RoutingTable
from controlplane.gateway.balancer.fair_queue import (
    FairQueue,
    QueueFull,
    TagClock,
    Tenancy,
    Ticket,
)
from controlplane.gateway.balancer.policies import LeastLoad, Policy, PrefixAffinity, RoundRobin, Session
from controlplane.gateway.balancer.request_keys import RequestKeys
from controlplane.gateway.balancer.state import BalancerState
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.state.demand import ModelLoad
from llamafleet.core.errors import ColdStartTimeout, Overloaded, QueueTimeout

POLL_S = 0.05  # how often a queued request looks for slots freed through another gateway
DEFAULT_TENANCY = Tenancy()
MAX_TENANTS_SEEN = 1000  # per model, for preemption's shares
RATE_WINDOW_S = 30.0  # completions per second are measured over this long (the objective's prediction)


def preemptible(slots: int) -> int:
    """Requests a replica may hold past its slots, suspended for other tenants' (a slot's KV each,
    in host memory): a quarter of its slots, at least one."""
    return max(1, slots // 4)


def tenant_slot(model: str, tenant: str) -> str:
    """The key a tenant's requests in flight on a model are counted under, beside the replicas'."""
    return f"tenant\x1f{model}\x1f{tenant}"


@dataclass
class Grant:
    """What ``acquire`` gave a request beside its replica: whose it is, and whom it may preempt."""

    tenant: str = ""
    preempts: str = ""  # a tenant over its share, one of whose running requests the engine may suspend
    policy: str = ""  # how the replica was chosen (traces): the policy, and its reason
    reason: str = ""
    queued: bool = False  # the request waited in the model's queue
    picked_at: float = 0.0  # time.monotonic() when the replica was chosen


class Balancer:
    def __init__(
        self,
        state: BalancerState,
        metrics: GatewayMetrics,
        default_policy: str = "least-load",
        queue_limit: int = 256,
        queue_timeout_s: float = 30.0,
        retry_after_s: float = 2.0,
        affinity_ttl_s: float = 600.0,
        tenant_queue_limit: int = 0,
        preemption: bool = True,
    ) -> None:
        self.state = state
        self._clock: TagClock = state.tag_clock()
        self._tenant_queue_limit = tenant_queue_limit
        self._preemption = preemption
        self._queues: dict[str, FairQueue] = {}
        self._done: dict[str, collections.deque[float]] = defaultdict(collections.deque)
        self._metrics = metrics
        self._policies: dict[str, Policy] = {
            p.name: p
            for p in (
                LeastLoad(),
                RoundRobin(),
                PrefixAffinity(state, affinity_ttl_s),
                Session(state, affinity_ttl_s),
            )
        }
        if default_policy not in self._policies:
            raise ValueError(
                f"unknown balancer policy {default_policy!r}; policies: {', '.join(self._policies)}"
            )
        self._default = default_policy
        self._queue_limit = queue_limit
        self._queue_timeout_s = queue_timeout_s
        self._retry_after_s = retry_after_s
        self._waiting: dict[str, int] = defaultdict(int)
        self._freed: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._in_engines: dict[str, int] = defaultdict(int)
        self._weights: dict[str, dict[str, float]] = defaultdict(dict)  # model → tenants seen → weight
        self._placed: collections.Counter[tuple[str, str]] = collections.Counter()  # (replica, tenant): here
        self._last_request: dict[str, float] = {}
        self.held = asyncio.Event()  # set when a request starts waiting for a first replica

    def loads(self) -> dict[str, ModelLoad]:
        """This gateway's load per model it has seen a request for."""
        return {
            model: ModelLoad(self._in_engines[model], self._waiting[model], last)
            for model, last in self._last_request.items()
        }

    def policy_for(self, table: RoutingTable, model: str) -> str:
        route = table.models.get(model)
        return route.balancer if route is not None and route.balancer in self._policies else self._default

    def _queue(self, model: str) -> FairQueue:
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = FairQueue(self._queue_limit, self._tenant_queue_limit)
        return queue

    def service_rate(self, model: str) -> float:
        """Requests of ``model`` this gateway saw complete per second lately (0: too few to say)."""
        done = self._done[model]
        now = time.monotonic()
        while done and now - done[0] > RATE_WINDOW_S:
            done.popleft()
        if len(done) < 3:
            return 0.0
        return len(done) / max(now - done[0], 1.0)

    async def acquire(
        self,
        table: Callable[[], RoutingTable],
        model: str,
        adapter: str | None,
        keys: RequestKeys,
        exclude: set[str],
        tenancy: Tenancy = DEFAULT_TENANCY,
        grant: Grant | None = None,
    ) -> Endpoint | None:
        """A replica with a slot taken for this request, or None when no replica is ready at all.
        ``grant`` (given back to ``release``) receives the tenant and whom the request may preempt."""
        started = time.monotonic()
        self._last_request[model] = time.time()
        counted = grant is not None  # the caller gives it back to release: the tenant's count with it
        grant = grant if grant is not None else Grant()
        grant.tenant = tenancy.tenant if counted else ""
        weights = self._weights[model]
        if len(weights) >= MAX_TENANTS_SEEN and tenancy.tenant not in weights:
            weights.clear()  # a trusted upstream naming endless tenants: forget them, not memory
        weights[tenancy.tenant] = tenancy.weight
        queue = self._queue(model)
        ticket: Ticket | None = None
        holding = False
        try:
            while True:
                current = table()
                route = current.models.get(model)
                serving = current.ready_endpoints(model, adapter)
                ready = [e for e in serving if e.replica_id not in exclude]
                if not serving and route is not None and route.holds:
                    if not holding:  # waiting for a first replica: a new phase of the wait
                        holding, started = True, time.monotonic()
                        self.held.set()
                elif not ready:
                    return None
                elif holding:  # a replica is ready: from here on it is an ordinary queue wait
                    holding, started = False, time.monotonic()
                turn = queue.head(adapter) is ticket if ticket is not None else not queue.waiting_for(adapter)
                if ready and route is not None and turn:
                    chosen = await self._try_pick(current, route, model, ready, keys, ticket, tenancy, grant)
                    if chosen is False:
                        continue  # another gateway took that slot first: look again
                    if isinstance(chosen, Endpoint):
                        grant.queued, grant.picked_at = ticket is not None, time.monotonic()
                        waited = time.monotonic() - started
                        if ticket is not None:
                            self._metrics.queue_wait_seconds.labels(model).observe(waited)
                            await self._clock.served(model, ticket.tag)
                        else:  # admitted without waiting: its turn counts all the same (a finish tag),
                            # or a tenant that took every free slot would be first in line again and
                            # hold up an idle tenant's preemption until its own request timed out
                            tag = await self._clock.start(model, tenancy.tenant, tenancy.weight)
                            await self._clock.served(model, tag)
                        self._metrics.tenant_admitted.labels(self._metrics.tenant(tenancy.tenant)).inc()
                        self._metrics.tenant_wait_seconds.labels(
                            self._metrics.tenant(tenancy.tenant)
                        ).observe(waited if ticket is not None else 0.0)
                        self._in_engines[model] += 1
                        if grant.tenant:
                            self._placed[(chosen.replica_id, grant.tenant)] += 1
                            await self.state.acquire(tenant_slot(model, grant.tenant))
                        if grant.preempts:
                            victim = self._metrics.tenant(grant.preempts)
                            self._metrics.preemptions.labels(model, victim).inc()
                        return chosen
                if ticket is None:
                    ticket = await self._join(queue, model, adapter, tenancy)
                    self._metrics.tenant_queued.labels(self._metrics.tenant(tenancy.tenant)).inc()
                    self._waiting[model] += 1
                    self._metrics.queue_length.labels(model).set(self._waiting[model])
                    continue  # first in line already (an idle tenant, a higher priority): try at once
                if ticket.shed is not None:
                    self._refused(model, tenancy, "shed")
                    raise ticket.shed
                limit = route.hold_s if holding and route is not None else self._queue_timeout_s
                remaining = limit - (time.monotonic() - started)
                if remaining <= 0:
                    self._timed_out(model, tenancy, holding, limit)
                # The first in line looks again when a slot frees here and polls for slots freed through
                # other gateways; the others sleep until they are first (or shed, or out of time).
                ticket.woken.clear()
                events = [ticket.woken]
                if queue.head(adapter) is ticket:
                    freed = self._freed[model]
                    freed.clear()
                    events.append(freed)
                    remaining = min(remaining, POLL_S)
                waits = [asyncio.ensure_future(event.wait()) for event in events]
                try:
                    await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waits:
                        waiter.cancel()
        finally:
            if ticket is not None:
                queue.leave(ticket)
                await self._clock.left(model, ticket)
                self._metrics.tenant_queued.labels(self._metrics.tenant(tenancy.tenant)).dec()
                self._waiting[model] -= 1
                self._metrics.queue_length.labels(model).set(self._waiting[model])

    async def _join(self, queue: FairQueue, model: str, adapter: str | None, tenancy: Tenancy) -> Ticket:
        """A place in the model's queue, or a 429 (a bound, or an objective the wait would miss)."""
        try:
            queue.check(tenancy, model, self._retry_after_s)  # before the tenant's turn is counted
        except QueueFull as exc:
            self._refused(model, tenancy, exc.bound)
            raise
        tag = await self._clock.start(model, tenancy.tenant, tenancy.weight)
        ticket = queue.join(tenancy, tag, adapter, model, self._retry_after_s)
        rate = self.service_rate(model)
        if tenancy.ttft_objective_s > 0 and rate > 0:
            predicted = (queue.ahead_of(ticket) + 1) / rate
            if predicted > tenancy.ttft_objective_s:
                ahead = queue.ahead_of(ticket)
                queue.leave(ticket)
                self._refused(model, tenancy, "objective")
                raise Overloaded(
                    f"the predicted wait for a slot of {model!r} is {predicted:.1f}s ({ahead} request(s) "
                    f"ahead, {rate:.2f} completions/s), past this request's time-to-first-token "
                    f"objective of {tenancy.ttft_objective_s:.1f}s; retry later or with a longer objective",
                    retry_after=min(predicted, 60.0),
                )
        await self._clock.waiting(model, ticket)
        return ticket

    def _refused(self, model: str, tenancy: Tenancy, why: str) -> None:
        self._metrics.refused.labels(model, why).inc()
        self._metrics.tenant_refused.labels(self._metrics.tenant(tenancy.tenant), why).inc()

    async def _try_pick(
        self, current: RoutingTable, route: ModelRoute, model: str, ready: list[Endpoint], keys: RequestKeys,
        ticket: Ticket | None, tenancy: Tenancy, grant: Grant,
    ) -> Endpoint | bool | None:  # fmt: skip
        """A replica with a slot taken; None when all are busy; False when another gateway won the race
        (a slot, or the turn: a request waiting at another gateway comes first)."""
        slots = max(route.parallel_slots, 1)
        load = await self.state.in_flight([e.replica_id for e in ready])
        free = [e for e in ready if load[e.replica_id] < slots]
        if not free:
            return await self._try_preempt(model, ready, load, slots, ticket, tenancy, grant)
        name = self.policy_for(current, model)
        choice = await self._policies[name].choose(model, free, keys, load, route.parallel_slots)
        if not await self._clock.may_take(model, ticket):
            return None  # another gateway's waiting request comes first: wait for the next free slot
        if not await self.state.try_acquire(choice.endpoint.replica_id, slots):
            return False
        grant.preempts, grant.policy, grant.reason = "", name, choice.reason
        self._metrics.decisions.labels(name, choice.reason).inc()
        self._set_in_flight(choice.endpoint.replica_id, load[choice.endpoint.replica_id] + 1)
        return choice.endpoint

    async def _try_preempt(
        self, model: str, ready: list[Endpoint], load: dict[str, int], slots: int, ticket: Ticket | None,
        tenancy: Tenancy, grant: Grant,
    ) -> Endpoint | bool | None:  # fmt: skip
        """Every slot is taken: a replica past its slots for a tenant with nothing in flight, naming the
        tenant most over its share for the engine to suspend; None when no tenant is over its share."""
        counted = self._preemption and grant.tenant
        victim = await self._over_share(model, tenancy, slots * len(ready)) if counted else ""
        limit = slots + preemptible(slots)
        room = [e for e in ready if load[e.replica_id] < limit]
        if not victim or not room:
            return None
        # Where this gateway placed most of the victim's requests (the engine suspends one there), then
        # the least loaded.
        endpoint = min(room, key=lambda e: (-self._placed[(e.replica_id, victim)], load[e.replica_id]))
        if not await self._clock.may_take(model, ticket):
            return None
        if not await self.state.try_acquire(endpoint.replica_id, limit):
            return False
        grant.preempts, grant.policy, grant.reason = victim, "preempt", "tenant_over_share"
        self._metrics.decisions.labels("preempt", "tenant_over_share").inc()
        self._set_in_flight(endpoint.replica_id, load[endpoint.replica_id] + 1)
        return endpoint

    async def _over_share(self, model: str, tenancy: Tenancy, slots: int) -> str:
        """The tenant holding the most requests past its weighted share of ``slots``, by at least one
        (it keeps its share after losing one), when ``tenancy``'s tenant has none in flight (and is not
        sheddable); "" otherwise."""
        if tenancy.priority == "sheddable":
            return ""
        weights = self._weights[model]
        tenants = list(weights)
        held = await self.state.in_flight([tenant_slot(model, t) for t in tenants])
        counts = {t: held[tenant_slot(model, t)] for t in tenants}
        if counts.get(tenancy.tenant, 0) > 0:
            return ""
        active = {t for t, n in counts.items() if n > 0} | {tenancy.tenant}
        total = sum(weights[t] for t in active)
        over = {t: counts[t] - slots * weights[t] / total for t in active if t != tenancy.tenant}
        worst = max(over, key=lambda t: over[t], default="")
        return worst if worst and over[worst] >= 1 else ""  # it keeps its share after losing one

    def _timed_out(self, model: str, tenancy: Tenancy, holding: bool, limit: float) -> None:
        if holding:
            self._refused(model, tenancy, "cold_start_timeout")
            raise ColdStartTimeout(
                f"no replica of {model!r} became ready within {limit:.0f}s while it started; retry",
                retry_after=self._retry_after_s,
            )
        self._refused(model, tenancy, "queue_timeout")
        raise QueueTimeout(
            f"all replicas of {model!r} stayed busy for {self._queue_timeout_s:.0f}s; retry later",
            retry_after=self._retry_after_s,
        )

    async def moved(self, model: str, old: Endpoint, new: Endpoint, grant: Grant | None = None) -> None:
        """A request served elsewhere than picked (a data plane's fallback): its slot is counted there."""
        await self.state.release(old.replica_id)
        await self.state.acquire(new.replica_id)
        if grant is not None and grant.tenant:
            self._placed[(old.replica_id, grant.tenant)] -= 1
            if self._placed[(old.replica_id, grant.tenant)] <= 0:
                del self._placed[(old.replica_id, grant.tenant)]
            self._placed[(new.replica_id, grant.tenant)] += 1
        load = await self.state.in_flight([old.replica_id, new.replica_id])
        for replica, count in load.items():
            self._set_in_flight(replica, count)
        self._freed[model].set()

    async def release(self, model: str, endpoint: Endpoint, grant: Grant | None = None) -> None:
        self._in_engines[model] -= 1
        self._done[model].append(time.monotonic())
        await self.state.release(endpoint.replica_id)
        if grant is not None and grant.tenant:
            key = (endpoint.replica_id, grant.tenant)
            self._placed[key] -= 1
            if self._placed[key] <= 0:
                del self._placed[key]
            await self.state.release(tenant_slot(model, grant.tenant))
        load = await self.state.in_flight([endpoint.replica_id])
        self._set_in_flight(endpoint.replica_id, load[endpoint.replica_id])
        self._freed[model].set()

    def _set_in_flight(self, replica: str, value: int) -> None:
        self._metrics.in_flight.labels(replica).set(value)

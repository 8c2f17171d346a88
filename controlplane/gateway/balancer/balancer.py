"""Balancer: per request, filter → policy → pick; when every replica is busy, queue with bounds.

Filter: ready replicas of the model that serve the requested LoRA adapter, not excluded (already
tried for this request), with a free slot (requests in flight below the model's parallel
slots). The model's policy (or the gateway's default) picks among them. When all are busy the
request waits in the model's queue: past ``queue_limit`` waiting requests it is refused at once
(429, Retry-After), past ``queue_timeout_s`` of waiting it gives up (429, Retry-After: the pool is
saturated). A request is woken when a slot frees here, and polls for slots freed through another
gateway (Redis).

An autoscaled model with no ready replica (at zero, or all starting) holds the request in the same
queue until one is ready, up to the route's ``hold_s`` (503 with Retry-After after that); the first
held request wakes the load reporter at once, so the control plane starts replicas for what waits.
The balancer also keeps this gateway's load per model (requests in engines, queued, the last
request's time): the autoscaler's signal (controlplane/gateway/load_report.py sends it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable

from controlplane.domain import Endpoint, ModelRoute, RoutingTable
from controlplane.gateway.balancer.policies import LeastLoad, Policy, PrefixAffinity, RoundRobin, Session
from controlplane.gateway.balancer.request_keys import RequestKeys
from controlplane.gateway.balancer.state import BalancerState
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.state.demand import ModelLoad
from llamafleet.core.errors import ColdStartTimeout, Overloaded, QueueTimeout

POLL_S = 0.05  # how often a queued request looks for slots freed through another gateway


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
    ) -> None:
        self.state = state
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

    async def acquire(
        self,
        table: Callable[[], RoutingTable],
        model: str,
        adapter: str | None,
        keys: RequestKeys,
        exclude: set[str],
    ) -> Endpoint | None:
        """A replica with a slot taken for this request, or None when no replica is ready at all."""
        started = time.monotonic()
        self._last_request[model] = time.time()
        queued = False
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
                if ready and route is not None:
                    chosen = await self._try_pick(current, route, model, ready, keys)
                    if chosen is False:
                        continue  # another gateway took that slot first: look again
                    if isinstance(chosen, Endpoint):
                        if queued:
                            self._metrics.queue_wait_seconds.labels(model).observe(time.monotonic() - started)
                        self._in_engines[model] += 1
                        return chosen
                if not queued:
                    if self._waiting[model] >= self._queue_limit:
                        self._metrics.refused.labels(model, "queue_full").inc()
                        raise Overloaded(
                            f"{self._waiting[model]} requests for {model!r} are already waiting "
                            f"({len(ready)} replica(s) ready, all busy); retry later",
                            retry_after=self._retry_after_s,
                        )
                    queued = True
                    self._waiting[model] += 1
                    self._metrics.queue_length.labels(model).set(self._waiting[model])
                limit = route.hold_s if holding and route is not None else self._queue_timeout_s
                remaining = limit - (time.monotonic() - started)
                if remaining <= 0:
                    self._timed_out(model, holding, limit)
                freed = self._freed[model]
                freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(freed.wait(), min(remaining, POLL_S))
        finally:
            if queued:
                self._waiting[model] -= 1
                self._metrics.queue_length.labels(model).set(self._waiting[model])

    async def _try_pick(
        self, current: RoutingTable, route: ModelRoute, model: str, ready: list[Endpoint], keys: RequestKeys
    ) -> Endpoint | bool | None:
        """A replica with a slot taken; None when all are busy; False when another gateway won the race."""
        load = await self.state.in_flight([e.replica_id for e in ready])
        free = [e for e in ready if load[e.replica_id] < max(route.parallel_slots, 1)]
        if not free:
            return None
        name = self.policy_for(current, model)
        choice = await self._policies[name].choose(model, free, keys, load, route.parallel_slots)
        if not await self.state.try_acquire(choice.endpoint.replica_id, max(route.parallel_slots, 1)):
            return False
        self._metrics.decisions.labels(name, choice.reason).inc()
        self._set_in_flight(choice.endpoint.replica_id, load[choice.endpoint.replica_id] + 1)
        return choice.endpoint

    def _timed_out(self, model: str, holding: bool, limit: float) -> None:
        if holding:
            self._metrics.refused.labels(model, "cold_start_timeout").inc()
            raise ColdStartTimeout(
                f"no replica of {model!r} became ready within {limit:.0f}s while it started; retry",
                retry_after=self._retry_after_s,
            )
        self._metrics.refused.labels(model, "queue_timeout").inc()
        raise QueueTimeout(
            f"all replicas of {model!r} stayed busy for {self._queue_timeout_s:.0f}s; retry later",
            retry_after=self._retry_after_s,
        )

    async def release(self, model: str, endpoint: Endpoint) -> None:
        self._in_engines[model] -= 1
        await self.state.release(endpoint.replica_id)
        load = await self.state.in_flight([endpoint.replica_id])
        self._set_in_flight(endpoint.replica_id, load[endpoint.replica_id])
        self._freed[model].set()

    def _set_in_flight(self, replica: str, value: int) -> None:
        self._metrics.in_flight.labels(replica).set(value)

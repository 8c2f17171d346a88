"""Picks the replica for each request: ready endpoints of the model, fewest requests in flight.

This is the foundation's policy; the filter → score → pick balancer with prefix affinity,
sessions and queueing replaces it behind ``pick``/``release``.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from controlplane.domain import Endpoint, RoutingTable
from controlplane.gateway.metrics import GatewayMetrics


class LeastInFlightBalancer:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self._in_flight: dict[str, int] = defaultdict(int)
        self._tiebreak = itertools.count()
        self._metrics = metrics

    def pick(
        self, table: RoutingTable, model: str, exclude: set[str], adapter: str | None = None
    ) -> Endpoint | None:
        candidates = [e for e in table.ready_endpoints(model, adapter) if e.replica_id not in exclude]
        if not candidates:
            return None
        turn = next(self._tiebreak)
        best = min(
            enumerate(candidates),
            key=lambda ie: (self._in_flight[ie[1].replica_id], (ie[0] - turn) % len(candidates)),
        )[1]
        self._in_flight[best.replica_id] += 1
        self._metrics.in_flight.labels(best.replica_id).set(self._in_flight[best.replica_id])
        return best

    def release(self, endpoint: Endpoint) -> None:
        self._in_flight[endpoint.replica_id] = max(0, self._in_flight[endpoint.replica_id] - 1)
        self._metrics.in_flight.labels(endpoint.replica_id).set(self._in_flight[endpoint.replica_id])

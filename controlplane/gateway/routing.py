"""The gateway's copy of the routing table, kept current by watching the control plane.

The last table stays in force while the control plane is unreachable (a restart, a failover,
a partition): engines keep serving, only changes wait. A control plane that has just started
marks its first tables ``settling`` (agents are still bringing their replicas back); a gateway
that already has a table keeps it until a settled one arrives, so a failover never empties it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from controlplane.api.client import ClusterClient
from controlplane.domain import RoutingTable
from controlplane.gateway.metrics import GatewayMetrics
from llamafleet.core.errors import Unavailable

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5  # the first retry after the stream ends; doubled per failed try ...
RETRY_MAX_S = 5.0  # ... up to this


class RoutingView:
    def __init__(self, client: ClusterClient, gateway_id: str, metrics: GatewayMetrics | None = None) -> None:
        self._client = client
        self._gateway_id = gateway_id
        self._metrics = metrics
        self.table = RoutingTable()
        self.has_table = False  # a table has arrived at least once: requests can be routed
        self.connected = False  # the watch stream is up and its latest table is in force
        self.stale_since: float | None = None  # wall-clock time the table stopped being confirmed
        self.settling = False  # reachable, but a control plane that just started is still taking over
        self._tables = 0  # tables received, all streams together

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self.settling = self.settling and not connected
        if connected:
            self.stale_since = None
        elif self.stale_since is None:
            self.stale_since = time.time()
        if self._metrics is not None:
            self._metrics.controlplane_connected.set(1 if connected else 0)
            self._metrics.routes_stale.set(0 if connected or not self.has_table else 1)

    async def run(self, stop: asyncio.Event) -> None:
        backoff = RETRY_FIRST_S
        self._set_connected(False)
        while not stop.is_set():
            tables = self._tables
            watch = asyncio.ensure_future(self._watch())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({watch, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not watch.done():
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
                break
            self.settling = False
            self._set_connected(False)
            if self._tables != tables:
                # The stream was up: start again from the first retry (a failover's new leader is found
                # within a second of it answering, not at a delay grown by earlier failures).
                backoff = RETRY_FIRST_S
            exc = watch.exception()
            if exc is not None and not isinstance(exc, Unavailable):
                raise exc
            served = (
                f"serving the last routing table ({len(self.table.models)} models)" if self.has_table else ""
            )
            log.warning("lost the routing table stream (%s); %sretrying in %.1fs", exc,
                        f"{served}; " if served else "", backoff)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)

    async def _watch(self) -> None:
        async for table in self._client.watch_routes(self._gateway_id):
            self._tables += 1
            self.settling = table.settling
            if table.settling and self.has_table:
                continue  # a control plane that just started: keep the last table until it settles
            if not self.connected:
                log.info("routing table received: %d model(s)", len(table.models))
            self.table = table
            self.has_table = True
            self._set_connected(not table.settling)

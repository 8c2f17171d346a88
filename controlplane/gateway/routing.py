"""The gateway's copy of the routing table, kept current by watching the control plane."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from controlplane.api.client import ClusterClient
from controlplane.domain import RoutingTable
from llamafleet.core.errors import Unavailable

log = logging.getLogger(__name__)


class RoutingView:
    def __init__(self, client: ClusterClient, gateway_id: str) -> None:
        self._client = client
        self._gateway_id = gateway_id
        self.table = RoutingTable()
        self.synced = False  # a table has arrived since the last (re)connect

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            watch = asyncio.ensure_future(self._watch())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({watch, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not watch.done():
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
                break
            self.synced = False
            exc = watch.exception()
            if exc is not None and not isinstance(exc, Unavailable):
                raise exc
            log.warning("lost the routing table stream (%s); retrying in %.1fs", exc, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)

    async def _watch(self) -> None:
        async for table in self._client.watch_routes(self._gateway_id):
            if not self.synced:
                log.info("routing table received: %d model(s)", len(table.models))
            self.table = table
            self.synced = True

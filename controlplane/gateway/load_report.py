"""Sends this gateway's load per model to the control plane: the autoscaler's signal (docs/AUTOSCALING.md).

Once a second, and at once when a request starts waiting for a model with no ready replica, so a
model at zero starts within one round trip of its first request rather than a tick later. A
control plane that cannot be reached is retried on the next tick; requests are not affected.
"""

from __future__ import annotations

import asyncio
import logging

from controlplane.api.client import ClusterClient
from controlplane.gateway.balancer.balancer import Balancer
from llamafleet.core.errors import Unavailable
from llamafleet.core.lifecycle import wait_any

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


async def report_load(
    client: ClusterClient,
    gateway_id: str,
    balancer: Balancer,
    stop: asyncio.Event,
    interval_s: float = INTERVAL_S,
) -> None:
    failing = False
    while not stop.is_set():
        balancer.held.clear()
        try:
            await client.report_load(gateway_id, balancer.loads())
            if failing:
                log.info("load reports reach the control plane again")
            failing = False
        except Unavailable as exc:
            if not failing:
                log.warning("cannot report load to the control plane (%s); autoscaling waits for it", exc)
            failing = True
        await wait_any([stop, balancer.held], interval_s)

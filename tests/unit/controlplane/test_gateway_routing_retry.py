"""The gateway's watch of the routing table retries with a growing delay while the control plane is
away, and starts again from the first delay once a stream has delivered: a failover's new leader is
found as soon as it answers, not after a delay grown by failures hours before. (The real stream, the
real gRPC and a real failover: tests/integration/test_controlplane_failover.py.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from controlplane.domain import RoutingTable
from controlplane.gateway import routing
from llamafleet.core.errors import Unavailable


class ScriptedControlPlane:
    """``watch_routes`` as the control plane's client gives it: per attempt, the tables to deliver
    before the stream breaks (the last attempt's stream stays open)."""

    def __init__(self, attempts: list[int]) -> None:
        self.attempts = attempts
        self.calls = 0
        self.done = asyncio.Event()

    async def watch_routes(self, gateway_id: str) -> AsyncIterator[RoutingTable]:
        tables = self.attempts[self.calls]
        self.calls += 1
        for version in range(tables):
            yield RoutingTable(version=version + 1)
        if self.calls == len(self.attempts):
            self.done.set()
            await asyncio.Event().wait()  # up until the gateway stops
        raise Unavailable("control plane unreachable")


async def test_the_retry_delay_grows_while_away_and_restarts_after_a_stream_that_delivered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(routing, "RETRY_FIRST_S", 0.01)
    monkeypatch.setattr(routing, "RETRY_MAX_S", 0.04)
    # refused 4 times; then up with one table and lost; refused twice; then up for good
    control = ScriptedControlPlane([0, 0, 0, 0, 1, 0, 0, 1])
    view = routing.RoutingView(control, "gw")  # type: ignore[arg-type]
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger=routing.__name__)
    running = asyncio.create_task(view.run(stop))
    await asyncio.wait_for(control.done.wait(), 10)
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(running, 10)
    delays = [r.args[-1] for r in caplog.records if r.msg.startswith("lost the routing table stream")]  # type: ignore[index]
    assert delays == [0.01, 0.02, 0.04, 0.04, 0.01, 0.02, 0.04]
    assert view.connected
    assert view.table.version == 1

"""One check of a balancer state's prompt-block memory, run on each kind of state (in process, Redis)."""

from __future__ import annotations

import asyncio

from controlplane.gateway.balancer.state import BalancerState


async def check_block_holding(state: BalancerState) -> None:
    """Leading blocks counted per replica, whatever else a replica holds; gone past their time."""
    await state.hold(("a", "b", "c"), "r1", 60)
    await state.hold(("a", "b", "x", "y"), "r2", 60)
    assert await state.held(("a", "b", "c", "d")) == {"r1": 3, "r2": 2}
    assert await state.held(("a", "b", "x", "y", "z")) == {"r1": 2, "r2": 4}
    assert await state.held(("z", "b", "c")) == {}  # leading blocks only
    assert await state.held(()) == {}
    await state.hold(("q",), "r3", 0.01)
    await asyncio.sleep(1.1)
    assert await state.held(("q",)) == {}  # past its time

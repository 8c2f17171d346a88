"""What the balancer remembers: requests in flight per replica, which replicas hold which prompt
blocks (request_keys.py), sticky sessions.

``InProcessState`` keeps it in this gateway; ``RedisState`` (balancer/redis_state.py) shares it
between gateway replicas. Both expire what they remember, so a gone replica or gateway fades out.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Protocol

from controlplane.gateway.balancer.fair_queue import LocalTagClock, TagClock

MAX_BLOCKS_HELD = 200_000  # prompt blocks remembered in one gateway (~300 bytes each)
MAX_OWNERS = 100_000  # sessions remembered in one gateway


class BalancerState(Protocol):
    async def in_flight(self, replicas: list[str]) -> dict[str, int]: ...

    async def try_acquire(self, replica: str, slots: int) -> bool:
        """Take a slot of ``replica`` if fewer than ``slots`` requests are in flight there, atomically."""

    async def acquire(self, replica: str) -> None: ...

    async def release(self, replica: str) -> None: ...

    async def owner(self, kind: str, key: str) -> str | None:
        """The replica a session ("session") was last sent to, if remembered."""

    async def remember(self, kind: str, key: str, replica: str, ttl_s: float) -> None: ...

    async def held(self, blocks: tuple[str, ...]) -> dict[str, int]:
        """For each replica that holds the first of ``blocks``, how many leading blocks it holds."""

    async def hold(self, blocks: tuple[str, ...], replica: str, ttl_s: float) -> None:
        """Remember that ``replica`` was sent ``blocks`` (for ``ttl_s``, renewed by each use)."""

    async def close(self) -> None: ...

    def tag_clock(self) -> TagClock:
        """Fair queuing's virtual times and waiting requests (fair_queue.py), kept where this state is."""


class InProcessState:
    """The balancer's memory in this process. What it remembers is kept in order of last use and
    forgotten as it expires (a few entries at a time, on each write), so a gateway's memory follows
    what its TTL covers — not every prompt it was ever sent — and never passes the caps above."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._in_flight: dict[str, int] = defaultdict(int)
        self._owners: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()  # by last use
        self._blocks: OrderedDict[str, dict[str, float]] = OrderedDict()  # block → replica → until

    def remembered(self) -> tuple[int, int]:
        """(prompt blocks, sessions) held now, expired ones not yet dropped included."""
        return len(self._blocks), len(self._owners)

    async def in_flight(self, replicas: list[str]) -> dict[str, int]:
        return {r: self._in_flight.get(r, 0) for r in replicas}

    async def try_acquire(self, replica: str, slots: int) -> bool:
        if self._in_flight[replica] >= slots:  # one event loop: check and take are one step
            return False
        self._in_flight[replica] += 1
        return True

    async def acquire(self, replica: str) -> None:
        self._in_flight[replica] += 1

    async def release(self, replica: str) -> None:
        self._in_flight[replica] = max(0, self._in_flight[replica] - 1)

    async def owner(self, kind: str, key: str) -> str | None:
        entry = self._owners.get((kind, key))
        if entry is None or entry[1] < self._clock():
            return None
        return entry[0]

    async def remember(self, kind: str, key: str, replica: str, ttl_s: float) -> None:
        now = self._clock()
        # The oldest use first: drop from the front while it has expired, or while over the cap.
        while self._owners and (
            len(self._owners) >= MAX_OWNERS or next(iter(self._owners.values()))[1] < now
        ):
            self._owners.popitem(last=False)
        self._owners[(kind, key)] = (replica, now + ttl_s)
        self._owners.move_to_end((kind, key))

    async def held(self, blocks: tuple[str, ...]) -> dict[str, int]:
        now = self._clock()
        counts: dict[str, int] = {}
        alive: set[str] | None = None
        for i, block in enumerate(blocks):
            holders = {r for r, until in self._blocks.get(block, {}).items() if until >= now}
            alive = holders if alive is None else alive & holders
            if not alive:
                break
            for replica in alive:
                counts[replica] = i + 1
        return counts

    async def hold(self, blocks: tuple[str, ...], replica: str, ttl_s: float) -> None:
        now = self._clock()
        while self._blocks and (
            len(self._blocks) + len(blocks) > MAX_BLOCKS_HELD
            or max(next(iter(self._blocks.values())).values()) < now
        ):
            self._blocks.popitem(last=False)
        for block in blocks:
            holders = self._blocks.setdefault(block, {})
            holders[replica] = now + ttl_s
            self._blocks.move_to_end(block)

    async def close(self) -> None:
        return None

    def tag_clock(self) -> TagClock:
        return LocalTagClock()


async def open_state(
    redis_url: str, gateway_id: str, on_health: Callable[[bool], None] = lambda _up: None
) -> BalancerState:
    """Redis-backed shared state when a URL is given (checked now, so a wrong URL fails at start)."""
    if not redis_url:
        return InProcessState()
    from controlplane.gateway.balancer.redis_state import RedisState

    return await RedisState.connect(redis_url, gateway_id, on_health)

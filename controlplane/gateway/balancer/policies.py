"""Balancing policies, selectable per model: which of the replicas with a free slot gets a request.

- ``round-robin``: each in turn (the baseline).
- ``least-load``: fewest requests in flight per slot, ties in turn.
- ``prefix-affinity`` (the gateway's default): the replica whose cache holds most of the prompt,
  weighed against its load. A prompt is a chain of block names (request_keys.py); the balancer
  remembers which replicas were sent which blocks (shared through Redis, for ``owner_ttl_s``,
  renewed by use) and gives each replica with a free slot a cost: the blocks it would have to
  compute (the prompt's blocks past the leading ones it holds) plus ``LOAD_BLOCKS`` times its
  requests in flight per slot. The cheapest wins; among equals the least loaded, then the one this
  gateway placed the fewest new prompts on (named by their first block: a system prompt, mostly),
  then the first block's consistent-hash ring order. So a conversation's turns go where its history
  is, a new conversation goes where its system prompt is, a hot prompt spills to another replica
  only when its holder is much busier (and the spill then holds it too), and new prompts on equally
  loaded replicas spread evenly (by the ring alone, 8 system prompts split 5 and 3 over two
  replicas of 4 slots, and a replica holding more prompts than slots evicts them in turn). This is
  llm-d's and the Gateway API Inference Extension's prefix-cache scoring, approximated from the
  prompt text as they approximate it, with the load in the same units.
- ``session``: sticky on the OpenAI ``user`` field or the X-Session-ID header, else least-load.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from controlplane.domain import Endpoint
from controlplane.gateway.balancer.hashring import HashRing
from controlplane.gateway.balancer.request_keys import RequestKeys
from controlplane.gateway.balancer.state import BalancerState

POLICIES = ("least-load", "prefix-affinity", "session", "round-robin")
# A replica's full slots weigh as much as this many prompt blocks to compute (24 × 256 characters,
# ~1,500 tokens): a 512-token system prompt keeps its replica until that has more than half its
# slots in flight beyond another's, as the previous rule (by whole system prompts) did.
LOAD_BLOCKS = 24.0


@dataclass(frozen=True)
class Choice:
    endpoint: Endpoint
    reason: str  # for metrics: least-load, round-robin, prefix-owner, prefix-spill, prefix-new, session-hit …


class Policy(Protocol):
    name: str

    async def choose(
        self, model: str, candidates: list[Endpoint], keys: RequestKeys, load: dict[str, int], slots: int
    ) -> Choice:
        """Pick among ``candidates`` (ready, with a free slot); ``load`` covers every ready replica."""


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._turns: dict[str, itertools.count[int]] = {}

    async def choose(
        self, model: str, candidates: list[Endpoint], keys: RequestKeys, load: dict[str, int], slots: int
    ) -> Choice:
        turn = next(self._turns.setdefault(model, itertools.count()))
        ordered = sorted(candidates, key=lambda e: e.replica_id)
        return Choice(ordered[turn % len(ordered)], "round-robin")


class LeastLoad:
    name = "least-load"

    def __init__(self) -> None:
        self._tiebreak = itertools.count()

    async def choose(
        self, model: str, candidates: list[Endpoint], keys: RequestKeys, load: dict[str, int], slots: int
    ) -> Choice:
        turn = next(self._tiebreak)
        ordered = sorted(candidates, key=lambda e: e.replica_id)
        best = min(
            enumerate(ordered), key=lambda ie: (load.get(ie[1].replica_id, 0), (ie[0] - turn) % len(ordered))
        )[1]
        return Choice(best, "least-load")


class Placements:
    """Which replica this gateway last placed each cache unit on (a system prompt, or a prompt prefix
    without one), for ``ttl_s``: how many units each replica holds, to spread new ones evenly.

    Kept in order of placement (one TTL for all: the oldest expires first) with the counts beside
    them, so a request costs the few entries that expired since the last one, not a scan of all."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._where: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._counts: Counter[str] = Counter()

    def _expire(self, now: float) -> None:
        while self._where:
            unit, (replica, until) = next(iter(self._where.items()))
            if until >= now:
                return
            del self._where[unit]
            self._counts[replica] -= 1
            if not self._counts[replica]:
                del self._counts[replica]

    def place(self, unit: str, replica: str) -> None:
        now = self._clock()
        self._expire(now)
        old = self._where.pop(unit, None)
        if old is not None:
            self._counts[old[0]] -= 1
        self._where[unit] = (replica, now + self._ttl)
        self._counts[replica] += 1

    def counts(self) -> Counter[str]:
        self._expire(self._clock())
        return +self._counts  # a copy without zeros


class PrefixAffinity:
    name = "prefix-affinity"

    def __init__(self, state: BalancerState, owner_ttl_s: float) -> None:
        self._state = state
        self._ttl = owner_ttl_s
        self._rings: dict[tuple[str, ...], HashRing] = {}
        self._fallback = LeastLoad()
        self._placements = Placements(owner_ttl_s)

    def _ring(self, members: tuple[str, ...]) -> HashRing:
        ring = self._rings.get(members)
        if ring is None:
            if len(self._rings) > 64:
                self._rings.clear()
            ring = self._rings[members] = HashRing(members)
        return ring

    async def choose(
        self, model: str, candidates: list[Endpoint], keys: RequestKeys, load: dict[str, int], slots: int
    ) -> Choice:
        if not keys.blocks:
            return await self._fallback.choose(model, candidates, keys, load, slots)
        by_id = {e.replica_id: e for e in candidates}
        held = await self._state.held(keys.blocks)  # replica → leading blocks it holds
        order = [m for m in self._ring(tuple(sorted(load))).walk(keys.blocks[0]) if m in by_id]
        units = self._placements.counts()
        total = len(keys.blocks)

        def cost(m: str) -> float:  # see the module docstring
            return total - held.get(m, 0) + LOAD_BLOCKS * load.get(m, 0) / max(1, slots)

        replica = min(order, key=lambda m: (cost(m), load.get(m, 0), units[m], order.index(m)))
        best = max((held.get(m, 0) for m in load), default=0)
        if held.get(replica, 0) == 0:
            self._placements.place(keys.blocks[0], replica)
        await self._state.hold(keys.blocks, replica, self._ttl)
        if best == 0:
            return Choice(by_id[replica], "prefix-new")
        return Choice(by_id[replica], "prefix-owner" if held.get(replica, 0) == best else "prefix-spill")


class Session:
    name = "session"

    def __init__(self, state: BalancerState, ttl_s: float) -> None:
        self._state = state
        self._ttl = ttl_s
        self._fallback = LeastLoad()

    async def choose(
        self, model: str, candidates: list[Endpoint], keys: RequestKeys, load: dict[str, int], slots: int
    ) -> Choice:
        if not keys.session:
            return await self._fallback.choose(model, candidates, keys, load, slots)
        key = f"{model}\x1f{keys.session}"
        remembered = await self._state.owner("session", key)
        for endpoint in candidates:
            if endpoint.replica_id == remembered:
                await self._state.remember("session", key, remembered, self._ttl)
                return Choice(endpoint, "session-hit")
        choice = await self._fallback.choose(model, candidates, keys, load, slots)
        await self._state.remember("session", key, choice.endpoint.replica_id, self._ttl)
        return Choice(choice.endpoint, "session-new")

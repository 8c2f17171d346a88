"""Balancing policies, selectable per model: which of the replicas with a free slot gets a request.

- ``round-robin``: each in turn (the baseline).
- ``least-load``: fewest requests in flight per slot, ties in turn.
- ``prefix-affinity`` (the gateway's default): requests whose prompts start alike go to the replica
  that served that prefix (its KV cache holds it) while it has a free slot. A new prefix goes, among
  the replicas not much busier than the least loaded (at most half a replica's slots more in
  flight), to the one that last served its system prompt (an engine copies that between slots), else
  to the least loaded, then among equals to the one this gateway placed the fewest cache units on
  (system prompts, or prefixes without one), then the key's consistent-hash ring order; a prefix
  whose owner is full spills the same way without losing its owner. Ties broken by the ring alone
  split 8 system prompts 5 and 3 over two replicas of 4 slots, and a replica holding more prompts
  than slots evicts them in turn; the count placed first (before the load) lost to least-load on
  random prompts in the cluster benchmark. Ownership is remembered (and shared through Redis) for
  ``owner_ttl_s``; the count of units placed is this gateway's own.
- ``session``: sticky on the OpenAI ``user`` field or the X-Session-ID header, else least-load.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from controlplane.domain import Endpoint
from controlplane.gateway.balancer.hashring import HashRing
from controlplane.gateway.balancer.request_keys import RequestKeys
from controlplane.gateway.balancer.state import BalancerState

POLICIES = ("least-load", "prefix-affinity", "session", "round-robin")


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
    without one), for ``ttl_s``: how many units each replica holds, to spread new ones evenly."""

    PRUNE_AT = 4096

    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._where: dict[str, tuple[str, float]] = {}

    def place(self, unit: str, replica: str) -> None:
        now = time.monotonic()
        if len(self._where) >= self.PRUNE_AT:
            self._where = {u: w for u, w in self._where.items() if w[1] >= now}
        self._where[unit] = (replica, now + self._ttl)

    def counts(self) -> Counter[str]:
        now = time.monotonic()
        return Counter(replica for replica, until in self._where.values() if until >= now)


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
        if not keys.prefix:
            return await self._fallback.choose(model, candidates, keys, load, slots)
        by_id = {e.replica_id: e for e in candidates}
        remembered = await self._state.owner("prefix", keys.prefix)
        if remembered in by_id:  # it has a free slot (candidates do): its KV cache beats a spread
            return Choice(by_id[remembered], "prefix-owner")
        # A new prefix (or one whose owner is full or gone): see the module's docstring.
        shared = await self._state.owner("prefix", keys.shared) if keys.shared else None
        order = [m for m in self._ring(tuple(sorted(load))).walk(keys.prefix) if m in by_id]
        least = min(load.get(m, 0) for m in order)
        near = [m for m in order if load.get(m, 0) - least <= max(1, slots) // 2]
        held = self._placements.counts()
        replica = min(near, key=lambda m: (m != shared, load.get(m, 0), held[m], order.index(m)))
        if replica != shared:
            self._placements.place(keys.shared or keys.prefix, replica)
        if keys.shared:
            await self._state.remember("prefix", keys.shared, replica, self._ttl)
        if remembered not in load:  # new, or its owner is gone; a full owner keeps its prefix
            await self._state.remember("prefix", keys.prefix, replica, self._ttl)
            return Choice(by_id[replica], "prefix-new" if remembered is None else "prefix-moved")
        return Choice(by_id[replica], "prefix-spill")


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

"""Balancing policies, selectable per model: which of the replicas with a free slot gets a request.

- ``round-robin``: each in turn (the baseline).
- ``least-load``: fewest requests in flight per slot, ties in turn.
- ``prefix-affinity``: requests whose prompts start alike go to the replica that served that
  prefix (its KV cache holds it) while it has a free slot; a new prefix goes to the least loaded
  replica (ties: the one that last served its system prompt, then the key's consistent-hash ring
  order), and a prefix whose owner is full spills the same way without losing its owner.
  Ownership is remembered (and shared through Redis) for ``owner_ttl_s``.
- ``session``: sticky on the OpenAI ``user`` field or the X-Session-ID header, else least-load.
"""

from __future__ import annotations

import itertools
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


class PrefixAffinity:
    name = "prefix-affinity"

    def __init__(self, state: BalancerState, owner_ttl_s: float) -> None:
        self._state = state
        self._ttl = owner_ttl_s
        self._rings: dict[tuple[str, ...], HashRing] = {}
        self._fallback = LeastLoad()

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
        # A new prefix (or one whose owner is full or gone) goes to the least loaded replica; among
        # equals, the one that last served its shared system prompt (an engine copies that between
        # slots), then the key's ring order, so every gateway breaks ties alike.
        shared = await self._state.owner("prefix", keys.shared) if keys.shared else None
        order = [m for m in self._ring(tuple(sorted(load))).walk(keys.prefix) if m in by_id]
        replica = min(order, key=lambda m: (load.get(m, 0), m != shared, order.index(m)))
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

"""Balancer state shared by gateway replicas through Redis.

- Requests in flight: each gateway keeps its own counts in ``lf:inflight:<gateway>`` (a hash of
  replica → count) and heartbeats its name into ``lf:gateways`` (a sorted set by time); the load
  of a replica is the sum over gateways seen in the last ``GATEWAY_TTL_S``, so the counts of a
  gateway that died vanish with it, and its hash expires.
- Taking a slot is one atomic step: a Lua script sums the live gateways' counts for the replica
  and increments this gateway's only when the sum is under the replica's slots, so two gateways
  can never both take its last slot.
- Prompt blocks (request_keys.py): ``lf:block:<name>``, a hash of replica → until (epoch seconds),
  expiring with the affinity TTL; a Lua script walks a prompt's blocks and returns how many leading
  ones each replica holds, in one round trip. Sessions: ``lf:owner:session:<key>`` → replica.
- Fair queuing (fair_queue.py, ``RedisTagClock``): a model's virtual time ``lf:fq:v:<model>`` and its
  tenants' finish tags ``lf:fq:finish:<model>``, so a tenant's turns count across gateways; and each
  gateway's waiting requests ``lf:fq:wait:<gateway>:<model>`` (a sorted set by priority and tag): a
  gateway's first in line takes a slot only when no live gateway has a request waiting before it, so
  a request queued at one gateway is not overtaken by another gateway's backlog.
- Redis unreachable: this gateway keeps serving on its own counts (it mirrors them locally), says
  so once in the log and in ``llamafleet_gateway_redis_up``, retries every ``RETRY_S``, and when
  Redis answers again writes its true counts back before sharing again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from controlplane.gateway.balancer.fair_queue import LocalTagClock, Ticket
from llamafleet.core.logs import shown_url

log = logging.getLogger(__name__)

GATEWAY_TTL_S = 30.0
HEARTBEAT_S = 5.0
RETRY_S = 2.0
_GATEWAYS = "lf:gateways"
_PREFIX = "lf:inflight:"

# KEYS: the gateways set, this gateway's hash. ARGV: replica, slots, oldest live beat, ttl, prefix.
# Reading other gateways' hashes by name (not in KEYS) ties this to one Redis, not a Redis Cluster.
_TAKE_SLOT = """
local total = 0
for _, gateway in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], '+inf')) do
  local count = tonumber(redis.call('HGET', ARGV[5] .. gateway, ARGV[1]) or '0')
  if count > 0 then total = total + count end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""


# KEYS: the model's virtual time, its finish hash. ARGV: tenant, 1/weight. Returns the start tag.
_START_TAG = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
local f = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local begin = math.max(v, f)
redis.call('HSET', KEYS[2], ARGV[1], tostring(begin + tonumber(ARGV[2])))
redis.call('EXPIRE', KEYS[2], 86400)
return tostring(begin)
"""
# KEYS: the model's virtual time. ARGV: a served ticket's start tag.
_SERVED = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > v then redis.call('SET', KEYS[1], ARGV[1], 'EX', 86400) end
return 1
"""
# KEYS: the gateways set. ARGV: oldest live beat, this gateway, model, this request's score, prefix.
_MAY_TAKE = """
for _, gateway in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  if gateway ~= ARGV[2] then
    local first = redis.call('ZRANGE', ARGV[5] .. gateway .. ':' .. ARGV[3], 0, 0, 'WITHSCORES')
    if first[2] and tonumber(first[2]) < tonumber(ARGV[4]) then return 0 end
  end
end
return 1
"""
_WAIT = "lf:fq:wait:"
_BLOCK = "lf:block:"
# ARGV: now (epoch seconds), the key prefix, then the prompt's block names in order.
# Returns replica, count, replica, count…: the leading blocks each replica holds.
_HELD = """
local now = tonumber(ARGV[1])
local alive = nil
local counts = {}
for i = 3, #ARGV do
  local row = redis.call('HGETALL', ARGV[2] .. ARGV[i])
  local still = {}
  local any = false
  for j = 1, #row, 2 do
    local replica = row[j]
    if tonumber(row[j + 1]) >= now and (alive == nil or alive[replica]) then
      still[replica] = true
      counts[replica] = i - 2
      any = true
    end
  end
  if not any then break end
  alive = still
end
local out = {}
for replica, count in pairs(counts) do
  table.insert(out, replica)
  table.insert(out, count)
end
return out
"""
# ARGV: replica, until (epoch seconds), ttl, the key prefix, then the block names.
_HOLD = """
for i = 5, #ARGV do
  local key = ARGV[4] .. ARGV[i]
  redis.call('HSET', key, ARGV[1], ARGV[2])
  redis.call('EXPIRE', key, ARGV[3])
end
return 1
"""
NOT_QUEUED = 1e300  # the score of a request not in line: any request waiting anywhere comes first


class RedisTagClock:
    """Fair queuing's shared state (see the module docstring); this gateway's own while Redis is down."""

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._local = LocalTagClock()
        client = state._client
        self._start = client.register_script(_START_TAG)
        self._served = client.register_script(_SERVED)
        self._may_take = client.register_script(_MAY_TAKE)

    async def start(self, model: str, tenant: str, weight: float) -> float:
        if await self._state._usable():
            try:
                keys = [f"lf:fq:v:{model}", f"lf:fq:finish:{model}"]
                return float(await self._start(keys=keys, args=[tenant, 1.0 / weight]))
            except (RedisError, OSError) as exc:
                self._state._down(exc)
        return await self._local.start(model, tenant, weight)

    async def served(self, model: str, tag: float) -> None:
        await self._local.served(model, tag)
        if await self._state._usable():
            try:
                await self._served(keys=[f"lf:fq:v:{model}"], args=[tag])
            except (RedisError, OSError) as exc:
                self._state._down(exc)

    def _waiting_key(self, model: str) -> str:
        return f"{_WAIT}{self._state._gateway}:{model}"

    async def waiting(self, model: str, ticket: Ticket) -> None:
        if await self._state._usable():
            try:
                async with self._state._client.pipeline(transaction=False) as pipe:
                    pipe.zadd(self._waiting_key(model), {ticket.name: ticket.score})
                    pipe.expire(self._waiting_key(model), int(GATEWAY_TTL_S))
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self._state._down(exc)

    async def left(self, model: str, ticket: Ticket) -> None:
        if self._state._up:
            try:
                await self._state._client.zrem(self._waiting_key(model), ticket.name)
            except (RedisError, OSError) as exc:
                self._state._down(exc)

    async def may_take(self, model: str, ticket: Ticket | None) -> bool:
        if not await self._state._usable():
            return True  # this gateway's own order only, said in the log when Redis went away
        try:
            if ticket is not None:  # its waiting set lives as long as something in it waits
                await self._state._client.expire(self._waiting_key(model), int(GATEWAY_TTL_S))
            score = ticket.score if ticket is not None else NOT_QUEUED
            args: list[str | float] = [time.time() - GATEWAY_TTL_S, self._state._gateway, model, score, _WAIT]
            return bool(await self._may_take(keys=[_GATEWAYS], args=args))
        except (RedisError, OSError) as exc:
            self._state._down(exc)
            return True


class RedisState:
    def __init__(
        self, client: aioredis.Redis, gateway_id: str, on_health: Callable[[bool], None] = lambda _up: None
    ) -> None:
        self._client = client
        self._gateway = gateway_id
        self._mine = f"{_PREFIX}{gateway_id}"
        self._take_slot = client.register_script(_TAKE_SLOT)
        self._held = client.register_script(_HELD)
        self._hold = client.register_script(_HOLD)
        self._counts: dict[str, int] = defaultdict(int)  # this gateway's requests in flight, always exact
        self._up = True
        self._retry_at = 0.0
        self._on_health = on_health
        self._heartbeat: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, url: str, gateway_id: str, on_health: Callable[[bool], None] = lambda _up: None
    ) -> RedisState:
        client = aioredis.from_url(url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise OSError(
                f"cannot reach Redis at {shown_url(url)} ({exc}); check the gateway's Redis URL"
            ) from exc
        state = cls(client, gateway_id, on_health)
        await state._beat()
        on_health(True)
        state._heartbeat = asyncio.create_task(state._beat_forever(), name="redis-heartbeat")
        log.info("balancer state shared through Redis at %s as gateway %s", shown_url(url), gateway_id)
        return state

    # --- health ----------------------------------------------------------------------------
    def _down(self, exc: Exception) -> None:
        self._retry_at = time.monotonic() + RETRY_S
        if self._up:
            self._up = False
            self._on_health(False)
            log.warning("Redis unreachable (%s): balancing on this gateway's own counts until it returns; "
                        "gateways may oversubscribe replicas, and queue fairly only among their own "
                        "requests, meanwhile", exc)  # fmt: skip

    async def _usable(self) -> bool:
        """Whether to use Redis now; while it is down, retries every RETRY_S and re-syncs on success."""
        if self._up:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            await self._resync()
        except (RedisError, OSError) as exc:
            self._down(exc)
            return False
        self._up = True
        self._on_health(True)
        log.info("Redis is back: wrote this gateway's %d request(s) in flight and share balancer state again",
                 sum(self._counts.values()))  # fmt: skip
        return True

    async def _resync(self) -> None:
        """Replace this gateway's hash with its true counts (Redis may have restarted empty, or be stale)."""
        live = {replica: n for replica, n in self._counts.items() if n > 0}
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._mine)
            for replica, count in live.items():
                pipe.hset(self._mine, replica, count)
            pipe.expire(self._mine, int(GATEWAY_TTL_S))
            pipe.zadd(_GATEWAYS, {self._gateway: time.time()})
            await pipe.execute()

    async def _beat(self) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zadd(_GATEWAYS, {self._gateway: time.time()})
            pipe.expire(self._mine, int(GATEWAY_TTL_S))
            await pipe.execute()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if not await self._usable():
                continue
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                self._down(exc)

    def tag_clock(self) -> RedisTagClock:
        """Fair queuing's state, shared through the same Redis."""
        return RedisTagClock(self)

    # --- the BalancerState protocol ------------------------------------------------------------
    async def in_flight(self, replicas: list[str]) -> dict[str, int]:
        if await self._usable():
            try:
                return await self._shared_in_flight(replicas)
            except (RedisError, OSError) as exc:
                self._down(exc)
        return {replica: self._counts.get(replica, 0) for replica in replicas}

    async def _shared_in_flight(self, replicas: list[str]) -> dict[str, int]:
        gateways = await self._client.zrangebyscore(_GATEWAYS, time.time() - GATEWAY_TTL_S, "+inf")
        async with self._client.pipeline(transaction=False) as pipe:
            for gateway in gateways:
                pipe.hmget(f"{_PREFIX}{gateway!s}", replicas)
            rows = await pipe.execute()
        totals = dict.fromkeys(replicas, 0)
        for row in rows:
            for replica, value in zip(replicas, row, strict=True):
                totals[replica] += max(int(value or 0), 0)
        return totals

    async def try_acquire(self, replica: str, slots: int) -> bool:
        if await self._usable():
            try:
                oldest = time.time() - GATEWAY_TTL_S
                args: list[str | int | float] = [replica, slots, oldest, int(GATEWAY_TTL_S), _PREFIX]
                taken = bool(await self._take_slot(keys=[_GATEWAYS, self._mine], args=args))
            except (RedisError, OSError) as exc:
                self._down(exc)
            else:
                self._counts[replica] += taken
                return taken
        if self._counts[replica] >= slots:
            return False
        self._counts[replica] += 1
        return True

    async def acquire(self, replica: str) -> None:
        """Take a slot whatever the load (the balancer uses try_acquire)."""
        self._counts[replica] += 1
        if await self._usable():
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.hincrby(self._mine, replica, 1)
                    pipe.expire(self._mine, int(GATEWAY_TTL_S))
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self._down(exc)

    async def release(self, replica: str) -> None:
        self._counts[replica] = max(0, self._counts[replica] - 1)
        if self._up:
            try:
                await self._client.hincrby(self._mine, replica, -1)
            except (RedisError, OSError) as exc:  # the re-sync on its return writes the true count
                self._down(exc)

    async def owner(self, kind: str, key: str) -> str | None:
        if not self._up:
            return None  # affinity is an optimisation: route without it
        try:
            value = await self._client.get(f"lf:owner:{kind}:{key}")
        except (RedisError, OSError) as exc:
            self._down(exc)
            return None
        return str(value) if value else None

    async def remember(self, kind: str, key: str, replica: str, ttl_s: float) -> None:
        if not self._up:
            return
        try:
            await self._client.set(f"lf:owner:{kind}:{key}", replica, ex=max(1, int(ttl_s)))
        except (RedisError, OSError) as exc:
            self._down(exc)

    async def held(self, blocks: tuple[str, ...]) -> dict[str, int]:
        if not self._up or not blocks:
            return {}  # affinity is an optimisation: route without it
        try:
            row = await self._held(keys=[], args=[time.time(), _BLOCK, *blocks])
        except (RedisError, OSError) as exc:
            self._down(exc)
            return {}
        return {str(row[i]): int(row[i + 1]) for i in range(0, len(row), 2)}

    async def hold(self, blocks: tuple[str, ...], replica: str, ttl_s: float) -> None:
        if not self._up or not blocks:
            return
        try:
            until = time.time() + ttl_s
            await self._hold(keys=[], args=[replica, until, max(1, int(ttl_s)), _BLOCK, *blocks])
        except (RedisError, OSError) as exc:
            self._down(exc)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        with contextlib.suppress(RedisError, OSError):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zrem(_GATEWAYS, self._gateway)
                pipe.delete(self._mine)
                await pipe.execute()
        await self._client.aclose()

"""Balancer state shared by gateway replicas through Redis.

- Requests in flight: each gateway keeps its own counts in ``lf:inflight:<gateway>`` (a hash of
  replica → count) and heartbeats its name into ``lf:gateways`` (a sorted set by time); the load
  of a replica is the sum over gateways seen in the last ``GATEWAY_TTL_S``, so the counts of a
  gateway that died vanish with it, and its hash expires.
- Prefix owners and sessions: ``lf:owner:<kind>:<key>`` → replica, with the affinity TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from llamafleet.core.errors import Unavailable

log = logging.getLogger(__name__)

GATEWAY_TTL_S = 30.0
HEARTBEAT_S = 5.0
_GATEWAYS = "lf:gateways"


class RedisState:
    def __init__(self, client: aioredis.Redis, gateway_id: str) -> None:
        self._client = client
        self._gateway = gateway_id
        self._mine = f"lf:inflight:{gateway_id}"
        self._heartbeat: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str, gateway_id: str) -> RedisState:
        client = aioredis.from_url(url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise OSError(f"cannot reach Redis at {url} ({exc}); check the gateway's Redis URL") from exc
        state = cls(client, gateway_id)
        await state._beat()
        state._heartbeat = asyncio.create_task(state._beat_forever(), name="redis-heartbeat")
        log.info("balancer state shared through Redis at %s as gateway %s", url, gateway_id)
        return state

    async def _beat(self) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zadd(_GATEWAYS, {self._gateway: time.time()})
            pipe.expire(self._mine, int(GATEWAY_TTL_S))
            await pipe.execute()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._beat()
            except RedisError as exc:
                log.warning("Redis heartbeat failed: %s", exc)

    async def in_flight(self, replicas: list[str]) -> dict[str, int]:
        try:
            gateways = await self._client.zrangebyscore(_GATEWAYS, time.time() - GATEWAY_TTL_S, "+inf")
            async with self._client.pipeline(transaction=False) as pipe:
                for gateway in gateways:
                    pipe.hmget(f"lf:inflight:{gateway!s}", replicas)
                rows = await pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"the balancer's Redis is unreachable: {exc}", retry_after=2) from exc
        totals = dict.fromkeys(replicas, 0)
        for row in rows:
            for replica, value in zip(replicas, row, strict=True):
                totals[replica] += max(int(value or 0), 0)
        return totals

    async def acquire(self, replica: str) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hincrby(self._mine, replica, 1)
            pipe.expire(self._mine, int(GATEWAY_TTL_S))
            await pipe.execute()

    async def release(self, replica: str) -> None:
        with contextlib.suppress(RedisError):  # a lost decrement expires with this gateway's hash
            await self._client.hincrby(self._mine, replica, -1)

    async def owner(self, kind: str, key: str) -> str | None:
        try:
            value = await self._client.get(f"lf:owner:{kind}:{key}")
        except RedisError:
            return None  # affinity is an optimisation: route without it
        return str(value) if value else None

    async def remember(self, kind: str, key: str, replica: str, ttl_s: float) -> None:
        with contextlib.suppress(RedisError):
            await self._client.set(f"lf:owner:{kind}:{key}", replica, ex=max(1, int(ttl_s)))

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        with contextlib.suppress(RedisError):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zrem(_GATEWAYS, self._gateway)
                pipe.delete(self._mine)
                await pipe.execute()
        await self._client.aclose()

"""Per-key quotas (requests and tokens per minute), shared by every gateway replica through Redis.

A sliding window as Cloudflare and nginx approximate it: the count in the current minute plus the
previous minute's weighted by how much of it the window still covers. Taking a request is one
atomic Lua step (check and count), so two gateways can never both take a key's last request.
Tokens are charged when a response ends (prompt + completion, from its usage); a key whose
window is full of tokens gets 429 until it has room again, as OpenAI's token limits do.

Redis unreachable: each gateway counts on its own (a key may then get up to N gateways × its
quota), says so in the log, and goes back to Redis on the next call that reaches it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from controlplane.gateway.access.keys import ApiKey
from llamafleet.core.errors import QuotaExceeded

log = logging.getLogger(__name__)

WINDOW_S = 60.0
_PREFIX = "lf:quota:"

# KEYS: current window, previous window. ARGV: limit, weight of the previous window, cost, ttl.
# Returns 1 and counts ``cost`` when it fits; 0 (and counts nothing) when it does not.
_TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
used = used + tonumber(redis.call('GET', KEYS[2]) or '0') * tonumber(ARGV[2])
if used + tonumber(ARGV[3]) > tonumber(ARGV[1]) then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('INCRBY', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return 1
"""


def _window(now: float) -> tuple[int, float]:
    """The current window's number and how far into it ``now`` is (0..1)."""
    return int(now // WINDOW_S), (now % WINDOW_S) / WINDOW_S


class Quotas:
    def __init__(self, redis_url: str = "") -> None:
        self._client = aioredis.from_url(redis_url, socket_timeout=1.0) if redis_url else None
        self._take_script = self._client.register_script(_TAKE) if self._client is not None else None
        self._local: dict[str, int] = defaultdict(int)  # counter key → count (no Redis, or Redis down)
        self._redis_ok = True

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def admit(self, key: ApiKey) -> None:
        """Count one request; QuotaExceeded (429) when the key's requests or tokens are used up."""
        if key.tokens_per_minute and not await self._take(key.name, "tokens", key.tokens_per_minute, 0):
            raise QuotaExceeded(f"API key {key.name!r} used its {key.tokens_per_minute} tokens per minute",
                                _retry_after())  # fmt: skip
        if key.requests_per_minute and not await self._take(key.name, "requests", key.requests_per_minute, 1):
            raise QuotaExceeded(
                f"API key {key.name!r} used its {key.requests_per_minute} requests per minute", _retry_after()
            )

    async def charge_tokens(self, key: ApiKey, tokens: int) -> None:
        if key.tokens_per_minute and tokens > 0:
            await self._add(key.name, "tokens", tokens)

    def _names(self, key: str, kind: str, now: float) -> tuple[str, str, float]:
        window, into = _window(now)
        base = f"{_PREFIX}{key}:{kind}:"
        return f"{base}{window}", f"{base}{window - 1}", 1.0 - into

    async def _take(self, key: str, kind: str, limit: int, cost: int) -> bool:
        current, previous, weight = self._names(key, kind, time.time())
        if self._take_script is not None:
            try:
                taken = await self._take_script(
                    keys=[current, previous], args=[limit, weight, cost, int(3 * WINDOW_S)]
                )
                self._set_redis(True)
                return bool(taken)
            except RedisError as exc:
                self._set_redis(False, exc)
        used = self._local[current] + self._local[previous] * weight
        if used + cost > limit:
            return False
        self._local[current] += cost
        self._forget_old(current)
        return True

    async def _add(self, key: str, kind: str, amount: int) -> None:
        current, _, _ = self._names(key, kind, time.time())
        if self._client is not None:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.incrby(current, amount)
                    pipe.expire(current, int(3 * WINDOW_S))
                    await pipe.execute()
                self._set_redis(True)
                return
            except RedisError as exc:
                self._set_redis(False, exc)
        self._local[current] += amount

    def _forget_old(self, current: str) -> None:
        if len(self._local) > 10_000:  # windows older than the previous one are never read again
            window = int(current.rsplit(":", 1)[1])
            for name in [n for n in self._local if int(n.rsplit(":", 1)[1]) < window - 1]:
                del self._local[name]

    def _set_redis(self, ok: bool, exc: Exception | None = None) -> None:
        if ok != self._redis_ok:
            if ok:
                log.info("quota counters: Redis reachable again; quotas are shared by every gateway")
            else:
                log.warning("quota counters: Redis unreachable (%s); counting on this gateway only", exc)
        self._redis_ok = ok


def _retry_after() -> float:
    """Seconds until the window moves on enough to free room: at most the rest of this minute."""
    return max(1.0, math.ceil(WINDOW_S - time.time() % WINDOW_S))

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

import asyncio
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

# KEYS: requests now, requests the minute before, tokens now, tokens the minute before.
# ARGV: requests per minute, tokens per minute (0: no limit), weight of the minute before, ttl.
# Returns 0 and counts the request when it fits; 1 when the requests, 2 when the tokens are used up.
_ADMIT = """
local weight = tonumber(ARGV[3])
local function used(now, before)
  return tonumber(redis.call('GET', now) or '0') + tonumber(redis.call('GET', before) or '0') * weight
end
if tonumber(ARGV[2]) > 0 and used(KEYS[3], KEYS[4]) >= tonumber(ARGV[2]) then return 2 end
if tonumber(ARGV[1]) > 0 then
  if used(KEYS[1], KEYS[2]) + 1 > tonumber(ARGV[1]) then return 1 end
  redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return 0
"""
_TTL_S = 180


def _window(now: float) -> tuple[int, float]:
    """The current window's number and how far into it ``now`` is (0..1)."""
    return int(now // WINDOW_S), (now % WINDOW_S) / WINDOW_S


class Quotas:
    def __init__(self, redis_url: str = "") -> None:
        self._client = aioredis.from_url(redis_url, socket_timeout=1.0) if redis_url else None
        self._admit_script = self._client.register_script(_ADMIT) if self._client is not None else None
        self._local: dict[str, int] = defaultdict(int)  # counter key → count (no Redis, or Redis down)
        self._redis_ok = True
        self._charging: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        if self._charging:
            await asyncio.gather(*self._charging, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def admit(self, key: ApiKey) -> None:
        """Count one request; QuotaExceeded (429) when the key's requests or tokens are used up.
        One Redis call (a Lua script) when quotas are shared."""
        rpm, tpm = key.requests_per_minute, key.tokens_per_minute
        if not rpm and not tpm:
            return
        names = [*self._names(key.name, "requests"), *self._names(key.name, "tokens")]
        weight = 1.0 - _window(time.time())[1]
        verdict = None
        if self._admit_script is not None:
            try:
                verdict = int(await self._admit_script(keys=names, args=[rpm, tpm, weight, _TTL_S]))
                self._set_redis(True)
            except RedisError as exc:
                self._set_redis(False, exc)
        if verdict is None:
            verdict = self._admit_here(names, rpm, tpm, weight)
        if verdict == 1:
            raise QuotaExceeded(f"API key {key.name!r} used its {rpm} requests per minute", _retry_after())
        if verdict == 2:
            raise QuotaExceeded(f"API key {key.name!r} used its {tpm} tokens per minute", _retry_after())

    def charge_tokens(self, key: ApiKey, tokens: int) -> None:
        """Add a finished response's tokens to the key's minute, off the response's path."""
        if key.tokens_per_minute and tokens > 0:
            task = asyncio.ensure_future(self._add(self._names(key.name, "tokens")[0], tokens))
            self._charging.add(task)
            task.add_done_callback(self._charging.discard)

    @staticmethod
    def _names(key: str, kind: str) -> tuple[str, str]:
        window = _window(time.time())[0]
        base = f"{_PREFIX}{key}:{kind}:"
        return f"{base}{window}", f"{base}{window - 1}"

    def _admit_here(self, names: list[str], rpm: int, tpm: int, weight: float) -> int:
        """The script's rule on this gateway's own counts (no Redis, or Redis down)."""
        local = self._local
        if tpm and local[names[2]] + local[names[3]] * weight >= tpm:
            return 2
        if rpm:
            if local[names[0]] + local[names[1]] * weight + 1 > rpm:
                return 1
            local[names[0]] += 1
        self._forget_old(names[0])
        return 0

    async def _add(self, name: str, amount: int) -> None:
        if self._client is not None:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.incrby(name, amount)
                    pipe.expire(name, _TTL_S)
                    await pipe.execute()
                self._set_redis(True)
                return
            except RedisError as exc:
                self._set_redis(False, exc)
        self._local[name] += amount

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

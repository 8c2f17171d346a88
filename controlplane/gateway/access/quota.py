"""Per-key quotas (requests and tokens per minute), shared by every gateway replica through Redis.

A sliding window as Cloudflare and nginx approximate it: the count in the current minute plus the
previous minute's weighted by how much of it the window still covers. Taking a request is one
atomic Lua step (check and count), so two gateways can never both take a key's last request.
Tokens: a key whose window is full of tokens gets 429 until it has room again, as OpenAI's token
limits do. Admission reserves what the request may cost (its prompt, estimated from its size, plus
the completion it allows) in the same step; when the response ends the reservation is settled to
the engine's count (prompt + completion, from its usage). Without the reservation a key could send
any number of huge prompts with ``max_tokens: 1`` while its window looked empty.

Redis unreachable: each gateway counts on its own (a key may then get up to N gateways × its
quota), says so in the log, and goes back to Redis on the next call that reaches it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from controlplane.gateway.access.api_keys import ApiKey
from llamafleet.core.errors import QuotaExceeded

log = logging.getLogger(__name__)

WINDOW_S = 60.0
_PREFIX = "lf:quota:"

# KEYS: requests now, requests the minute before, tokens now, tokens the minute before.
# ARGV: requests per minute, tokens per minute (0: no limit), weight of the minute before, ttl,
# tokens to reserve. Returns 0 and counts the request (and reserves its tokens) when it fits; 1 when
# the requests, 2 when the tokens are used up.
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
if tonumber(ARGV[2]) > 0 and tonumber(ARGV[5]) > 0 then
  redis.call('INCRBY', KEYS[3], ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
return 0
"""
_TTL_S = 180


@dataclass(frozen=True)
class Reservation:
    """Tokens taken from a key's window at admission: ``counter`` is the window they went into."""

    counter: str = ""
    tokens: int = 0


NOTHING = Reservation()


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

    async def admit(self, key: ApiKey, reserve: int = 0) -> Reservation:
        """Count one request and reserve ``reserve`` tokens (what it may cost); QuotaExceeded (429) when
        the key's requests or tokens are used up. One Redis call (a Lua script) when quotas are shared."""
        rpm, tpm = key.requests_per_minute, key.tokens_per_minute
        if not rpm and not tpm:
            return NOTHING
        reserve = max(0, reserve) if tpm else 0
        names = [*self._names(key.name, "requests"), *self._names(key.name, "tokens")]
        weight = 1.0 - _window(time.time())[1]
        verdict = None
        if self._admit_script is not None:
            try:
                args = [rpm, tpm, weight, _TTL_S, reserve]
                verdict = int(await self._admit_script(keys=names, args=args))
                self._set_redis(True)
            except RedisError as exc:
                self._set_redis(False, exc)
        if verdict is None:
            verdict = self._admit_here(names, rpm, tpm, weight, reserve)
        if verdict == 1:
            raise QuotaExceeded(f"API key {key.name!r} used its {rpm} requests per minute", _retry_after())
        if verdict == 2:
            raise QuotaExceeded(f"API key {key.name!r} used its {tpm} tokens per minute", _retry_after())
        return Reservation(names[2], reserve) if reserve else NOTHING

    def charge_tokens(self, key: ApiKey, tokens: int, reserved: Reservation = NOTHING) -> None:
        """Settle a finished response: its tokens into the key's minute, its reservation taken back;
        off the response's path."""
        if not key.tokens_per_minute:
            return
        current = self._names(key.name, "tokens")[0]
        changes: dict[str, int] = {}
        if reserved.tokens:
            changes[reserved.counter] = -reserved.tokens
        changes[current] = changes.get(current, 0) + max(0, tokens)
        for name, amount in changes.items():
            if amount:
                task = asyncio.ensure_future(self._add(name, amount))
                self._charging.add(task)
                task.add_done_callback(self._charging.discard)

    @staticmethod
    def _names(key: str, kind: str) -> tuple[str, str]:
        window = _window(time.time())[0]
        base = f"{_PREFIX}{key}:{kind}:"
        return f"{base}{window}", f"{base}{window - 1}"

    def _admit_here(self, names: list[str], rpm: int, tpm: int, weight: float, reserve: int) -> int:
        """The script's rule on this gateway's own counts (no Redis, or Redis down)."""
        local = self._local
        if tpm and local[names[2]] + local[names[3]] * weight >= tpm:
            return 2
        if rpm:
            if local[names[0]] + local[names[1]] * weight + 1 > rpm:
                return 1
            local[names[0]] += 1
        if tpm and reserve:
            local[names[2]] += reserve
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

"""One file over HTTP(S) into a partial file: resumed with Range where it stopped, retried with
backoff, redirects followed, hashed while it arrives.

aiohttp, not httpx: over loopback it received 1,964 MiB/s against httpx's 323 MiB/s here; each
chunk is written and hashed in a thread (both release the GIL) while the next one arrives.

A connection dropped mid-file, a 5xx or 429, or a body shorter than announced is retried from the
byte it stopped at (a server that ignores Range starts the file again); 404 is ModelNotFound,
401/403 SourceDenied, a full disk DiskFull — each at once, without retrying.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import aiohttp

from llamafleet.core.errors import DiskFull, ModelNotFound, SourceDenied, Unavailable

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class Progress:
    done: int  # bytes of this file on disk
    total: int  # its size (0 while unknown)
    rate: float  # bytes per second over the last second or so
    fetched: int  # bytes received over the network so far (a resume does not fetch twice)


@dataclass(frozen=True)
class Fetched:
    sha256: str
    size: int
    fetched: int  # bytes that crossed the network, all attempts together


def _hash_prefix(path: Path) -> tuple[hashlib._Hash, int]:
    """The hash and length of what an earlier attempt left in ``path``."""
    digest, size = hashlib.sha256(), 0
    if path.exists():
        with path.open("rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
                size += len(block)
    return digest, size


@dataclass
class _Partial:
    """The partial file as it grows: its length, its running hash, and the bytes fetched for it."""

    digest: hashlib._Hash
    have: int
    fetched: int = 0


async def fetch(
    client: aiohttp.ClientSession,
    url: str,
    part: Path,
    headers: dict[str, str] | None = None,
    on_progress: Callable[[Progress], None] = lambda _p: None,
    attempts: int = 6,
    backoff_s: float = 0.5,
) -> Fetched:
    """Download ``url`` into ``part`` (appending to what is there); returns its sha256 and size."""
    state = _Partial(*await asyncio.to_thread(_hash_prefix, part))
    last_error = ""
    for attempt in range(attempts):
        if attempt:
            delay = min(backoff_s * 2 ** (attempt - 1), 10.0) * random.uniform(0.8, 1.2)
            log.info("download of %s: %s; resuming at byte %d in %.1fs", url, last_error, state.have, delay)
            await asyncio.sleep(delay)
        request = dict(headers or {})
        if state.have:
            request["Range"] = f"bytes={state.have}-"
        try:
            async with client.get(url, headers=request, allow_redirects=True) as response:
                total = _check(response, url, state, part)
                if total < 0:
                    last_error = f"HTTP {response.status}"
                    continue
                if total == state.have and response.status == 416:
                    return Fetched(state.digest.hexdigest(), state.have, state.fetched)
                await _write(response, part, state, total, on_progress)
        except (aiohttp.ClientError, TimeoutError) as exc:
            last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            continue
        if total and state.have < total:
            last_error = f"connection ended at byte {state.have} of {total}"
            continue
        if total and state.have > total:
            raise Unavailable(f"{url}: got {state.have} bytes, {total} announced")
        return Fetched(state.digest.hexdigest(), state.have, state.fetched)
    raise Unavailable(f"download of {url} failed {attempts} times; last: {last_error}", retry_after=30)


def _check(response: aiohttp.ClientResponse, url: str, state: _Partial, part: Path) -> int:
    """The file's total size from the answer's headers (0: unknown; -1: try again); raises for
    answers that no retry changes."""
    status = response.status
    if status == 416 and state.have:
        total = _total(response.headers.get("content-range", ""))
        if total == state.have:  # complete already: the last attempt ended after the last byte
            return total
        state.digest, state.have = hashlib.sha256(), 0  # the partial is not a prefix of this file
        part.write_bytes(b"")
        return -1
    if status == 404:
        raise ModelNotFound(f"{url}: not found (HTTP 404)")
    if status in (401, 403):
        raise SourceDenied(f"{url}: HTTP {status} (a token or credentials are needed)")
    if status == 429 or status >= 500:
        return -1
    if status not in (200, 206):
        raise ModelNotFound(f"{url}: HTTP {status}")
    if status == 200:
        if state.have:  # the server ignored Range: start the file again
            state.digest, state.have = hashlib.sha256(), 0
            part.write_bytes(b"")
        return int(response.headers.get("content-length") or 0)
    content_range = response.headers.get("content-range", "")
    if _start(content_range) != state.have:
        raise Unavailable(f"{url}: asked for byte {state.have}, got a range from {_start(content_range)}")
    return _total(content_range)


async def _write(
    response: aiohttp.ClientResponse,
    part: Path,
    state: _Partial,
    total: int,
    on_progress: Callable[[Progress], None],
) -> None:
    window_start, window_bytes, rate = time.monotonic(), 0, 0.0
    pending: asyncio.Future[None] | None = None

    def consume(out: BinaryIO, chunk: bytes) -> None:
        out.write(chunk)
        state.digest.update(chunk)

    buffer = bytearray()

    async def dispatch() -> None:
        nonlocal pending, window_start, window_bytes, rate
        if pending is not None:
            await pending
        chunk = bytes(buffer)
        buffer.clear()
        pending = asyncio.ensure_future(asyncio.to_thread(consume, out, chunk))
        state.have += len(chunk)
        state.fetched += len(chunk)
        window_bytes += len(chunk)
        elapsed = time.monotonic() - window_start
        if elapsed >= 1.0:
            rate, window_start, window_bytes = window_bytes / elapsed, time.monotonic(), 0
            on_progress(Progress(state.have, total, rate, state.fetched))

    try:
        with part.open("ab") as out:
            try:
                async for data in response.content.iter_any():
                    buffer += data
                    if len(buffer) >= CHUNK:
                        await dispatch()
            finally:
                if buffer:
                    await dispatch()  # what arrived before a cut is kept: the resume starts after it
                if pending is not None:
                    await pending  # the file and the hash hold every byte counted in state.have
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull(
                f"no space left on this node for {part.name} ({state.have} bytes received)"
            ) from None
        raise
    on_progress(Progress(state.have, total, rate, state.fetched))


def _start(content_range: str) -> int:
    match = _RANGE.match(content_range)
    return int(match[1]) if match else -1


def _total(content_range: str) -> int:
    match = _RANGE.match(content_range) or re.match(r"bytes \*/(\d+)", content_range)
    if match is None:
        return 0
    value = match.groups()[-1]
    return int(value) if value and value != "*" else 0

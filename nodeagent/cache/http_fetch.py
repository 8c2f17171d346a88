"""One file over HTTP(S) into a partial file: resumed with Range where it stopped, retried with
backoff, redirects followed, hashed while it arrives.

Each attempt runs on a thread of its own with the standard library's blocking HTTP client, whose
``readinto`` receives straight into the pipeline's buffers (nodeagent/cache/pipeline.py); the
event loop only starts it, hears its progress once a second and gets its result. Through aiohttp
the loop thread itself was the bottleneck (~600 MiB/s over loopback, against ~1,100 now).

A connection dropped mid-file, a 5xx or 429, or a body shorter than announced is retried from the
byte it stopped at (a server that ignores Range starts the file again); 404 is ModelNotFound,
401/403 SourceDenied, a full disk DiskFull — each at once, without retrying. A redirect to another
host does not carry the Authorization header along (the hub redirects to its CDN).

Proxies, as curl and most clients take them from the environment: ``HTTPS_PROXY`` for https URLs
(a CONNECT tunnel: TLS runs end to end with the file's host, the proxy sees only its name),
``HTTP_PROXY`` for http ones (the request sent to the proxy with the full URL), either in lower
case too, credentials in the proxy URL sent as ``Proxy-Authorization``, and ``NO_PROXY``
(comma-separated hosts, domain suffixes, ``*``) going direct. Each hop of a redirect is checked
anew (a CDN may be direct where the hub is not). Only ``http://`` proxies (what corporate proxies
speak); another scheme is refused in one line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import logging
import random
import re
import socket
import ssl
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from llamafleet.core.errors import DiskFull, ModelNotFound, SourceDenied, Unavailable
from llamafleet.core.logs import shown_url
from nodeagent.cache.pipeline import Partial, receive

log = logging.getLogger(__name__)

_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_REDIRECTS = (301, 302, 303, 307, 308)
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0


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


class _Retry(Exception):
    """This attempt failed in a way the next one may not: try again from the byte we have."""


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"https": 443, "http": 80}.get(scheme, 0)


def prefix_matches(prefix: str, url: str) -> bool:
    """Whether ``url`` is under ``prefix``: the same scheme, host and port, and a path under the prefix's
    path by whole segments (``https://art.corp`` never matches ``https://art.corp.evil.io``, nor
    ``https://art.corp/models`` match ``https://art.corp/models-x``)."""
    if origin(prefix) != origin(url) or not urlsplit(prefix).hostname:
        return False
    base, path = urlsplit(prefix).path.rstrip("/"), urlsplit(url).path
    return not base or path == base or path.startswith(base + "/")


async def fetch(
    url: str,
    part: Path,
    headers: dict[str, str] | None = None,
    on_progress: Callable[[Progress], None] = lambda _p: None,
    attempts: int = 6,
    backoff_s: float = 0.5,
    limit: int = 0,
    limit_why: str = "the download limit",
) -> Fetched:
    """Download ``url`` into ``part`` (appending to what is there); returns its sha256 and size.
    ``limit``: the most bytes the file may reach (0: none; ``limit_why`` says what sets it): an answer
    that announces more is refused, and a body that goes past it is stopped there (DiskFull)."""
    state = await asyncio.to_thread(Partial.of, part)
    shown = shown_url(url)  # what logs and errors say: no query (a presigned URL's signature), no userinfo
    last_error = ""
    for attempt in range(attempts):
        if attempt:
            delay = min(backoff_s * 2 ** (attempt - 1), 10.0) * random.uniform(0.8, 1.2)
            log.info("download of %s: %s; resuming at byte %d in %.1fs", shown, last_error, state.have, delay)
            await asyncio.sleep(delay)
        try:
            one = _Attempt(url, part, dict(headers or {}), state, on_progress, (limit, limit_why))
            total = await one.run()
        except _Retry as exc:
            last_error = str(exc)
            continue
        if total and state.have < total:
            last_error = f"connection ended at byte {state.have} of {total}"
            continue
        if total and state.have > total:
            raise Unavailable(f"{shown}: got {state.have} bytes, {total} announced")
        return Fetched(state.digest.hexdigest(), state.have, state.fetched)
    raise Unavailable(f"download of {shown} failed {attempts} times; last: {last_error}", retry_after=30)


class _Attempt:
    """One request and its body, on a thread of its own; cancelling the awaiting task closes the
    socket, so the thread ends at once and the file still holds exactly what ``state`` counts."""

    def __init__(
        self,
        url: str,
        part: Path,
        headers: dict[str, str],
        state: Partial,
        on_progress: Callable[[Progress], None],
        limit: tuple[int, str] = (0, ""),
    ) -> None:
        self._url, self._part, self._headers, self._state = url, part, headers, state
        self._shown = shown_url(url)
        self._limit, self._limit_why = limit
        self._on_progress = on_progress
        self._stop = threading.Event()
        self._connection: http.client.HTTPConnection | None = None
        self._loop = asyncio.get_running_loop()
        self._total = 0
        self._rate = 0.0

    async def run(self) -> int:
        """The file's total size (0: unknown) once this attempt's body has ended."""
        done: asyncio.Future[int] = self._loop.create_future()
        threading.Thread(target=self._thread, args=(done,), name="download", daemon=True).start()
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            self._abort()
            await asyncio.wait([done])
            raise

    def _abort(self) -> None:
        self._stop.set()
        connection = self._connection
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    def _thread(self, done: asyncio.Future[int]) -> None:
        try:
            result: int | BaseException = self._attempt()
        except BaseException as exc:  # handed to the awaiting task
            result = exc
        finally:
            if self._connection is not None:
                self._connection.close()
        self._loop.call_soon_threadsafe(_settle, done, result)

    def _attempt(self) -> int:
        state = self._state
        if state.have:
            self._headers["Range"] = f"bytes={state.have}-"
        try:
            response = self._open()
            total = _check(response.status, response.headers, self._shown, state, self._part)
            if total < 0:
                raise _Retry(f"HTTP {response.status}")
            self._total = total
            if response.status == 416:  # the last attempt ended after the last byte
                state.hash_prefix(self._part)
                return total
            if self._limit and total > self._limit:
                raise DiskFull(
                    f"{self._limit_why}: {self._shown} announces {total} bytes, more than the {self._limit} "
                    "allowed; nothing more was fetched"
                )
            receive(response, self._part, state, self._stop, self._second, (self._limit, self._limit_why))
            self._second(self._rate)
        except (OSError, http.client.HTTPException) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        return total

    def _open(self) -> http.client.HTTPResponse:
        """Send the request, following redirects; the response whose body is the file."""
        url, headers = self._url, self._headers
        for _ in range(10):
            parts = urlsplit(url)
            connection, target, extra = connect_to(url)
            self._connection = connection
            if self._stop.is_set():
                raise _Retry("stopped")
            connection.connect()
            assert connection.sock is not None
            connection.sock.settimeout(READ_TIMEOUT_S)
            connection.request("GET", target, headers={**headers, **extra})
            response = connection.getresponse()
            if response.status not in _REDIRECTS:
                return response
            target = urljoin(url, response.headers.get("location", ""))
            connection.close()
            if parts.scheme == "https" and urlsplit(target).scheme != "https":
                raise SourceDenied(f"{self._shown}: redirected from https to {urlsplit(target).scheme or '?'}://"
                                   f"{urlsplit(target).hostname}; a downgrade is refused")  # fmt: skip
            if origin(target) != origin(url):  # no credential of ours goes to another origin
                headers = {k: v for k, v in headers.items() if k.lower() == "range"}
            url = target
        raise ModelNotFound(f"{self._shown}: more than 10 redirects")

    def _second(self, rate: float) -> None:
        state, self._rate = self._state, rate
        progress = Progress(state.have, self._total, rate, state.fetched)
        self._loop.call_soon_threadsafe(self._on_progress, progress)


def proxy_for(url: str) -> str:
    """The proxy the environment names for ``url`` ("" when none, or NO_PROXY exempts its host)."""
    proxies = urllib.request.getproxies_environment()  # HTTPS_PROXY / https_proxy …, NO_PROXY as "no"
    scheme, host, port = origin(url)
    proxy = proxies.get(scheme, "")
    if not proxy or _exempt(host, port, proxies.get("no", "")):
        return ""
    return proxy if "://" in proxy else f"http://{proxy}"


def _exempt(host: str, port: int, no_proxy: str) -> bool:
    """Whether NO_PROXY names ``host``: ``*``, the host itself (with or without the port), or a domain
    it is in (``example.com`` and ``.example.com`` both cover ``cdn.example.com``)."""
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, wanted = entry.partition(":") if entry.count(":") == 1 else (entry, "", "")
        if wanted and wanted != str(port):
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def connect_to(url: str) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """An unopened connection for ``url`` (through its proxy, if any), the request target, and the
    headers the proxy needs."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = proxy_for(url)
    if not proxy:
        if parts.scheme == "https":
            context = ssl.create_default_context()
            return (
                http.client.HTTPSConnection(host, port, timeout=CONNECT_TIMEOUT_S, context=context),
                path,
                {},
            )
        return http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT_S), path, {}
    via = urlsplit(proxy)
    if via.scheme.lower() != "http":
        raise SourceDenied(
            f"proxy {shown_url(proxy)}: only http:// proxies are supported (set HTTPS_PROXY to the "
            "proxy's http:// address: https URLs go through it in a CONNECT tunnel)"
        )
    auth = {}
    if via.username:
        secret = f"{unquote(via.username)}:{unquote(via.password or '')}".encode()
        auth = {"Proxy-Authorization": "Basic " + base64.b64encode(secret).decode()}
    if parts.scheme == "https":
        tunnel = http.client.HTTPSConnection(
            via.hostname or "",
            via.port or 80,
            timeout=CONNECT_TIMEOUT_S,
            context=ssl.create_default_context(),
        )
        tunnel.set_tunnel(host, port, headers=auth)  # TLS with the file's host, through the proxy
        return tunnel, path, {}
    return (
        http.client.HTTPConnection(via.hostname or "", via.port or 80, timeout=CONNECT_TIMEOUT_S),
        url,
        auth,
    )


def _settle(done: asyncio.Future[int], result: int | BaseException) -> None:
    if done.cancelled():
        return
    if isinstance(result, BaseException):
        done.set_exception(result)
    else:
        done.set_result(result)


def _check(status: int, headers: http.client.HTTPMessage, url: str, state: Partial, part: Path) -> int:
    """The file's total size from the answer's headers (0: unknown; -1: try again); raises for
    answers that no retry changes."""
    if status == 416 and state.have:
        total = _total(headers.get("content-range", ""))
        if total == state.have:  # complete already: the last attempt ended after the last byte
            return total
        state.restart(part)  # the partial is not a prefix of this file
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
            state.restart(part)
        return int(headers.get("content-length") or 0)
    content_range = headers.get("content-range", "")
    if _start(content_range) != state.have:
        raise Unavailable(f"{url}: asked for byte {state.have}, got a range from {_start(content_range)}")
    return _total(content_range)


def _start(content_range: str) -> int:
    match = _RANGE.match(content_range)
    return int(match[1]) if match else -1


def _total(content_range: str) -> int:
    match = _RANGE.match(content_range) or re.match(r"bytes \*/(\d+)", content_range)
    if match is None:
        return 0
    value = match.groups()[-1]
    return int(value) if value and value != "*" else 0

"""A Kubernetes Service for tests: one TCP address in front of several pods, routed to the ready ones.

kube-proxy sends new connections only to endpoints whose readiness probe passes; this does the
same for loopback processes: every ``probe_s`` it GETs each backend's readiness URL, and each new
connection goes to a ready backend (connections are refused while none is). Existing connections
are left alone, as kube-proxy leaves them; they end when their backend does.

A Service's selector picks pods by label: with ``selects`` given, a backend that names its ``pod``
is an endpoint only while ``selects(pod)`` holds (the test reads the pod's labels from the API
emulator, as the endpoints controller watches them; a second or so of lag, as in a cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from nodeagent.rpc.tunnel import pipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    address: tuple[str, int]
    ready_url: str
    pod: str = ""


class Service:
    def __init__(
        self,
        port: int,
        backends: list[Backend],
        probe_s: float = 0.5,
        selects: Callable[[str], bool] | None = None,
    ) -> None:
        self.port = port
        self.backends = backends
        self._selects = selects
        self._probe_s = probe_s
        self._ready: list[Backend] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="service")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def ready_endpoints(self) -> list[Backend]:
        return list(self._ready)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Service:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self._spawn(self._probe())

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: object) -> None:
        task = self._loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe(self) -> None:
        async with httpx.AsyncClient(timeout=1) as client:
            while True:
                ready = []
                for backend in self.backends:
                    selector = self._selects
                    if (
                        selector is not None
                        and backend.pod
                        and not await asyncio.to_thread(selector, backend.pod)
                    ):
                        continue
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(backend.ready_url)).status_code == 200:
                            ready.append(backend)
                if ready != self._ready:
                    log.info("service %d: ready endpoints now %s", self.port, [b.address for b in ready])
                self._ready = ready
                await asyncio.sleep(self._probe_s)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._ready:
            log.info("service %d: no ready endpoint; refusing a connection", self.port)
            writer.close()  # no endpoints: the connection is refused
            return
        backend = self._ready[0]
        try:
            up_reader, up_writer = await asyncio.open_connection(*backend.address)
        except OSError:
            writer.close()
            return
        self._spawn(pipe(reader, up_writer))
        self._spawn(pipe(up_reader, writer))

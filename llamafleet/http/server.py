"""Runs a uvicorn server as one part of a process whose signals belong to the process, not to uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from llamafleet.http.header_limits import BoundedHttpTools

# How long an idle client connection stays open: longer than any client keeps one in its pool (the
# gateway's 15 s to engines, cloud load balancers' 60 s), so the client always closes an idle
# connection first. With uvicorn's 5 s a pooled request could go out on a connection the server was
# closing at that moment (the gateway saw ServerDisconnectedError on one request of a benchmark).
KEEP_ALIVE_S = 75


class _NoDelayHttp(BoundedHttpTools):
    """Every connection with Nagle's algorithm off, as uvloop turns it off and asyncio does only for
    sockets whose Python object says IPPROTO_TCP (ours, from ``socket.socket(family)``, say 0). With it
    on, an answer's second small write (its body after its headers) waited for the client's ACK of
    the first, which Linux delays by 40 ms: the standalone gateway and `llamafleet up` (which run on
    asyncio, beside gRPC) added 40 ms to a share of their answers (docs/BENCHMARKS.md)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would trap SIGINT/SIGTERM and re-raise them after serving; our lifecycle
        # module owns signals and tells the server to exit through ``stop``.
        yield


async def serve_until(
    app: Any,
    host: str,
    port: int,
    stop: asyncio.Event,
    graceful_s: float = 5,
    listening: socket.socket | None = None,
) -> bool:
    """Serve ``app`` until ``stop`` is set, then stop accepting and let requests in flight finish for up to
    ``graceful_s``. Raises OSError (one line) when the port cannot be bound. ``listening``: a socket the
    parent process bound and listens on already (``host`` and ``port`` are then only for logs)."""
    grace = max(1, round(graceful_s))
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, lifespan="off", timeout_graceful_shutdown=grace,
        http=_NoDelayHttp, timeout_keep_alive=KEEP_ALIVE_S,
    )  # fmt: skip
    server = _EmbeddedServer(config)
    # Bind here, not in uvicorn: on a busy port uvicorn logs and calls sys.exit, which would end the
    # whole process with a traceback; an OSError is said in one line by the lifecycle. ``host`` may
    # list several addresses, comma-separated (e.g. 127.0.0.1,::1), as llama-server's --host does.
    listeners: list[socket.socket] = [listening] if listening is not None else []
    addresses = [h.strip() for h in host.split(",") if h.strip()] if listening is None else []
    for address in addresses:
        listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM,
                                 socket.IPPROTO_TCP)  # fmt: skip
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if ":" in address and len(addresses) > 1:  # beside an IPv4 listener, not dual-stack
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listeners.append(listener)
        try:
            listener.bind((address, port))
        except OSError as exc:
            for opened in listeners:
                opened.close()
            raise OSError(f"cannot listen on {address}:{port}: {exc.strerror} (another process holds it: "
                          "stop it, or pick another port)") from None  # fmt: skip
        listener.listen(2048)

    async def exit_on_stop() -> None:
        await stop.wait()
        server.should_exit = True

    async with asyncio.TaskGroup() as group:
        watcher = group.create_task(exit_on_stop())
        try:
            await server.serve(sockets=listeners)
        finally:
            for listener in listeners:
                listener.close()
        watcher.cancel()
    return bool(server.started)

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
        http=BoundedHttpTools, timeout_keep_alive=KEEP_ALIVE_S,
    )  # fmt: skip
    server = _EmbeddedServer(config)
    # Bind here, not in uvicorn: on a busy port uvicorn logs and calls sys.exit, which would end the
    # whole process with a traceback; an OSError is said in one line by the lifecycle. ``host`` may
    # list several addresses, comma-separated (e.g. 127.0.0.1,::1), as llama-server's --host does.
    listeners: list[socket.socket] = [listening] if listening is not None else []
    addresses = [h.strip() for h in host.split(",") if h.strip()] if listening is None else []
    for address in addresses:
        listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
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

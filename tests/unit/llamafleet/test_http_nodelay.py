"""Every connection our HTTP servers accept has Nagle's algorithm off, on asyncio's own loop too (the
CLI's gateway and `llamafleet up` run on it): with it on, an answer's body waited for the client's
delayed ACK of its headers, 40 ms on Linux, on a share of the standalone gateway's answers."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest
from fastapi import FastAPI, Request

from llamafleet.http.server import serve_until


def _accepted(peer: tuple[str, int]) -> socket.socket:
    """The server's side of the connection from ``peer``: the socket object its transport holds."""
    for obj in gc.get_objects():
        if isinstance(obj, socket.socket) and obj.fileno() >= 0:
            try:
                if obj.getpeername() == peer:
                    return obj
            except OSError:
                continue
    raise AssertionError(f"no accepted socket from {peer}")


async def test_an_accepted_connection_has_nagle_off_on_asyncios_loop() -> None:
    assert "uvloop" not in type(asyncio.get_running_loop()).__module__  # the loop the CLI runs on
    api = FastAPI()

    @api.get("/nodelay")
    async def nodelay(request: Request) -> dict[str, int]:
        assert request.client is not None
        sock = _accepted((request.client.host, request.client.port))
        return {"nodelay": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)}

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_until(api, "127.0.0.1", port, stop, graceful_s=1))
    for _ in range(200):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the server did not start")
    writer.write(b"GET /nodelay HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    stop.set()
    await serving
    assert answer.endswith(b'{"nodelay":1}'), answer

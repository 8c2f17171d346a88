"""An idle keep-alive connection outlives the pools of the server's clients: the client closes first."""

from __future__ import annotations

import asyncio
import socket

import pytest
from fastapi import FastAPI

from controlplane.gateway.proxy import ENGINE_KEEPALIVE_S
from llamafleet.http.server import KEEP_ALIVE_S, serve_until


def test_the_gateway_closes_idle_engine_connections_before_engines_do() -> None:
    assert ENGINE_KEEPALIVE_S < KEEP_ALIVE_S
    assert KEEP_ALIVE_S > 60  # cloud load balancers keep idle connections to the gateway for 60 s


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


async def test_a_connection_idle_past_uvicorns_default_five_seconds_still_serves() -> None:
    api = FastAPI()

    @api.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

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
    assert await _get(reader, writer) == b'{"pong":"yes"}'
    await asyncio.sleep(6)  # uvicorn's default would close the connection at 5 s
    assert await _get(reader, writer) == b'{"pong":"yes"}'
    writer.close()
    stop.set()
    assert await serving

"""serve_until binds every address it is given (llama-server's --host A,B), and says which one failed."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from fastapi import FastAPI

from llamafleet.http.server import serve_until
from tests.support.ports import server_port


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="this host has no IPv6 loopback")


def app() -> FastAPI:
    api = FastAPI()

    @api.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return api


async def test_a_comma_separated_host_listens_on_each_address() -> None:
    port, stop = server_port(), asyncio.Event()
    serving = asyncio.create_task(serve_until(app(), "127.0.0.1,::1", port, stop, graceful_s=1))
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(100):
            try:
                answers = [await client.get(f"http://{h}:{port}/ping") for h in ("127.0.0.1", "[::1]")]
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the server did not start")
    assert [a.json() for a in answers] == [{"pong": "yes"}] * 2
    stop.set()
    assert await serving


async def test_a_taken_address_is_named_and_nothing_is_left_bound() -> None:
    port = server_port()
    with socket.socket(socket.AF_INET6) as taken:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        taken.bind(("::1", port))
        taken.listen()
        with pytest.raises(OSError, match=rf"cannot listen on ::1:{port}"):
            await serve_until(app(), "127.0.0.1,::1", port, asyncio.Event())
    with socket.socket() as again:  # the IPv4 listener opened before the failure was closed
        again.bind(("127.0.0.1", port))

"""Mutual-TLS tunnels in front of llama.cpp's RPC, which has no authentication or encryption of its own.

On the worker's node a ``WorkerGate`` listens on the node's cluster address; it completes a TLS
handshake that requires a client certificate signed by the cluster CA, checks that the
certificate names the head node the worker is leased to, and only then opens a connection to the
RPC server, which listens on loopback. Anyone else is refused before a byte reaches llama.cpp. On
the head's node a ``HeadTunnel`` listens on loopback for the engine and carries each connection to
the worker's gate over TLS, checking that the gate's certificate names the worker's node.
Certificates are per node (CN = node id), from files (the control plane issues them; issue 16).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeCredentials:
    """This node's certificate and key, and the cluster CA that signs every node's certificate."""

    cert: Path
    key: Path
    ca: Path

    def context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        context = ssl.create_default_context(purpose, cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        if purpose == ssl.Purpose.CLIENT_AUTH:
            context.verify_mode = ssl.CERT_REQUIRED  # a head without a cluster certificate never gets in
        else:
            context.check_hostname = False  # nodes are named by certificate CN, checked below
        return context


def _common_name(writer: asyncio.StreamWriter) -> str:
    cert = writer.get_extra_info("peercert") or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes one way until either side ends, then close the writing side."""
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _splice(a: Stream, b: Stream) -> None:
    """Carry bytes both ways; when either direction ends, both connections are closed."""
    directions = [asyncio.ensure_future(pipe(a[0], b[1])), asyncio.ensure_future(pipe(b[0], a[1]))]
    try:
        await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in directions:
            task.cancel()
        await asyncio.gather(*directions, return_exceptions=True)
        for writer in (a[1], b[1]):
            writer.close()


async def serve_until(handler: Handler, stop: asyncio.Event, ready: asyncio.Event | None = None,
                      **listen: Any) -> None:  # fmt: skip
    """Listen until ``stop``, then end every open connection: none outlives the server or its loop."""
    handlers: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handler(reader, writer)
        finally:
            handlers.discard(task)
            writer.close()

    server = await asyncio.start_server(tracked, **listen)
    async with server:
        if ready is not None:
            ready.set()
        await stop.wait()
    for task in list(handlers):
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)


class WorkerGate:
    """Accepts only the leased head's node, then connects it to the local RPC server."""

    def __init__(self, credentials: NodeCredentials, rpc_address: tuple[str, int], leased_to: str) -> None:
        self._context = credentials.context(ssl.Purpose.CLIENT_AUTH)
        self._rpc = rpc_address
        self.leased_to = leased_to  # the head node's id; a new lease replaces it
        self.refused = 0  # connections closed before reaching the RPC server
        self.forwarded = 0  # connections carried to the RPC server

    async def serve(self, host: str, port: int, stop: asyncio.Event) -> None:
        await serve_until(self._accept, stop, host=host, port=port, ssl=self._context)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _common_name(writer)
        if peer != self.leased_to:
            self.refused += 1
            log.warning("RPC gate: refused %s (certificate of %r; leased to %r)",
                        writer.get_extra_info("peername"), peer, self.leased_to)  # fmt: skip
            writer.close()
            return
        try:
            upstream = await asyncio.open_connection(*self._rpc)
        except OSError as exc:
            log.warning("RPC gate: the local RPC server at %s:%d is not answering (%s)", *self._rpc, exc)
            writer.close()
            return
        self.forwarded += 1
        await _splice((reader, writer), upstream)


class HeadTunnel:
    """A loopback endpoint for the head engine, carried over TLS to one worker's gate."""

    def __init__(self, credentials: NodeCredentials, gate: tuple[str, int], worker_node: str) -> None:
        self._context = credentials.context(ssl.Purpose.SERVER_AUTH)
        self._gate = gate
        self._worker_node = worker_node

    async def serve(self, port: int, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        await serve_until(self._accept, stop, ready, host="127.0.0.1", port=port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_connection(*self._gate, ssl=self._context)
        except (OSError, ssl.SSLError) as exc:
            log.warning("RPC tunnel to %s:%d: %s", *self._gate, exc)
            writer.close()
            return
        if _common_name(upstream[1]) != self._worker_node:
            log.warning("RPC tunnel: %s:%d is not node %r", *self._gate, self._worker_node)
            upstream[1].close()
            writer.close()
            return
        await _splice((reader, writer), upstream)

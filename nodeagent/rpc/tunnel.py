"""Mutual-TLS tunnels in front of llama.cpp's RPC, which has no authentication or encryption of its own.

On the worker's node a ``WorkerGate`` listens on the node's cluster address; it completes a TLS
handshake that requires a client certificate signed by the cluster CA, checks that the
certificate names the head node the worker is leased to, and only then opens a connection to the
RPC server, which listens on loopback. Anyone else is refused before a byte reaches llama.cpp. On
the head's node a ``HeadTunnel`` listens on loopback for the engine and carries each connection to
the worker's gate over TLS, checking that the gate's certificate names the worker's node.
Certificates are per node (CN = node id, O = llamafleet:node): the ones agents get when they join.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamafleet.security.pki import NODE_ORG

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
    """The node a peer's (CA-verified) certificate names; '' for any other kind of certificate (a
    gateway's, an admin's), which must never pass for a node."""
    cert = writer.get_extra_info("peercert") or {}
    names = {str(key): str(value) for rdn in cert.get("subject", ()) for key, value in rdn}
    return names.get("commonName", "") if names.get("organizationName") == NODE_ORG else ""


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
    """Accepts only the leased head's node, then connects it to the local RPC server.

    With credentials the head proves its node by a cluster-signed certificate and the traffic is
    encrypted. Without (no certificates given to the agents) the gate compares the peer's address
    with the head node's: weaker (an address can be spoofed on the node network, nothing is
    encrypted), said so in the agent's log and in docs/SPLIT.md.
    """

    def __init__(self, credentials: NodeCredentials | None, rpc_address: tuple[str, int], leased_to: str,
                 leased_address: str = "") -> None:  # fmt: skip
        self._context = credentials.context(ssl.Purpose.CLIENT_AUTH) if credentials else None
        self.rpc_address = rpc_address  # the RPC server behind the gate; a restarted worker moves it
        self.leased_to = leased_to  # the head node's id; a new lease replaces it
        self._leased_ips = _addresses(leased_address) if leased_address else set()
        self.refused = 0  # connections closed before reaching the RPC server
        self.forwarded = 0  # connections carried to the RPC server

    async def serve(
        self, host: str, port: int, stop: asyncio.Event, ready: asyncio.Event | None = None
    ) -> None:
        await serve_until(self._accept, stop, ready, host=host, port=port, ssl=self._context)

    def _admits(self, writer: asyncio.StreamWriter) -> tuple[bool, str]:
        if self._context is not None:
            peer = _common_name(writer)
            return peer == self.leased_to, f"certificate of {peer!r}"
        address = str((writer.get_extra_info("peername") or ("",))[0])
        return address in self._leased_ips, f"address {address}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        admitted, who = self._admits(writer)
        if not admitted:
            self.refused += 1
            log.warning("RPC gate: refused %s (%s; leased to %r)",
                        writer.get_extra_info("peername"), who, self.leased_to)  # fmt: skip
            writer.close()
            return
        try:
            upstream = await asyncio.open_connection(*self.rpc_address)
        except OSError as exc:
            log.warning("RPC gate: local RPC server %s:%d does not answer (%s)", *self.rpc_address, exc)
            writer.close()
            return
        self.forwarded += 1
        await _splice((reader, writer), upstream)


def _addresses(host: str) -> set[str]:
    """Every address ``host`` resolves to (it may be a name or an address already)."""
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


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

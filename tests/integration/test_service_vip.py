"""The DIY baseline's Service (bench/service_vip.py) spreads new connections over its endpoints in the
kernel, as kube-proxy's iptables rules do, and leaves no rule behind."""

from __future__ import annotations

import collections
import os
import shutil
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench.service_vip import service_vip
from nodeagent.supervisor.process import free_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables") is None, reason="needs root and iptables (make netfilter)"
)


@contextmanager
def naming_server(port: int) -> Iterator[None]:
    """Answers every connection with its own port number."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(str(port).encode())

    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def ask(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        return conn.recv(16).decode()


def test_connections_spread_over_every_endpoint_and_the_rules_go_with_it() -> None:
    a, b, vip = free_port("127.0.0.1"), free_port("127.0.0.1"), free_port("127.0.0.1")
    with naming_server(a), naming_server(b):
        with service_vip(vip, [a, b]):
            answers = collections.Counter(ask(vip) for _ in range(80))
        assert set(answers) == {str(a), str(b)}
        assert min(answers.values()) >= 20, answers  # random halves: 20 of 80 is far below what chance gives
        with pytest.raises(ConnectionRefusedError):  # the rules are gone; nothing listens there itself
            ask(vip)

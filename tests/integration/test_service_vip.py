"""The DIY baseline's Service (bench/service_vip.py) spreads new connections over its endpoints in the
kernel, as kube-proxy's iptables rules do, and leaves no rule behind: not when it ends, and not for
long when its process is killed (the next VIP or test session sweeps the rules of the dead)."""

from __future__ import annotations

import collections
import errno
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench.service_vip import CHAIN_PREFIX, service_vip, sweep_stale_vips
from tests.support.ports import server_port
from tests.support.processes import REPO
from tests.support.wait import wait_until

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
    a, b, vip = server_port(), server_port(), server_port()
    with naming_server(a), naming_server(b):
        with service_vip(vip, [a, b]):
            answers = collections.Counter(ask(vip) for _ in range(80))
        assert set(answers) == {str(a), str(b)}
        assert min(answers.values()) >= 20, answers  # random halves: 20 of 80 is far below what chance gives
        with pytest.raises(ConnectionRefusedError):  # the rules are gone; nothing listens there itself
            ask(vip)


def vip_chains() -> str:
    out = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], check=True, capture_output=True, text=True)
    return "\n".join(line for line in out.stdout.splitlines() if CHAIN_PREFIX in line)


def test_a_vips_port_is_held_while_it_exists_so_no_other_process_is_given_it() -> None:
    a, vip = server_port(), server_port()
    with naming_server(a), service_vip(vip, [a]):
        probe = socket.socket()
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as our servers bind
        with pytest.raises(OSError, match="in use") as refused:
            probe.bind(("127.0.0.1", vip))
        probe.close()
        assert refused.value.errno == errno.EADDRINUSE
        assert sweep_stale_vips() == []  # its process is alive: its chain stays
        assert f"{CHAIN_PREFIX}{vip}-{os.getpid()}" in vip_chains()
        assert ask(vip) == str(a)


def test_the_rules_of_a_killed_process_are_swept_and_its_port_serves_again() -> None:
    a, vip = server_port(), server_port()
    code = (
        "import sys, time\n"
        "from bench.service_vip import service_vip\n"
        f"with service_vip({vip}, [{a}]):\n"
        "    print('up', flush=True)\n"
        "    time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"up\n"
    finally:
        child.send_signal(signal.SIGKILL)  # no finally runs: its rules stay
        child.communicate()
    chain = f"{CHAIN_PREFIX}{vip}-{child.pid}"
    assert chain in vip_chains()
    # What a later process that binds the port would see: its connections go to the dead VIP's backend.
    with naming_server(vip), naming_server(a):
        assert ask(vip) == str(a)
        assert chain in sweep_stale_vips()
        assert chain not in vip_chains()
        wait_until(lambda: ask(vip) == str(vip), 10, "the port to reach its own server again")

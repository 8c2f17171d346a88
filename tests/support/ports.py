"""Ports for the servers tests start, chosen before the server binds them.

A port the kernel picks (bind to 0) comes from Linux's ephemeral range (32768-60999 by default), the
range every outgoing connection takes its own port from: between choosing such a port and the
server binding it, any process's outgoing connection may take it, and the server's bind fails
("Address already in use": a gateway in the control-plane failover test met it). And two test
workers may be handed the same port. So test servers take ports from below the ephemeral range,
where no connection's own port lands, each xdist worker from its own share of it (control planes
have theirs: tests/support/processes.py GRPC_PORTS).
"""

from __future__ import annotations

import os

from nodeagent.supervisor.process import free_port

SERVER_PORTS = (10000, 19999)


def worker_share(ports: tuple[int, int], spare: int = 0) -> tuple[int, int]:
    """This pytest-xdist worker's share of ``ports`` (all of them outside xdist), ``spare`` ports short
    of its end (a control plane's join port is its port + 1)."""
    worker, count = (
        os.environ.get("PYTEST_XDIST_WORKER", ""),
        int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")),
    )
    if not worker.startswith("gw") or count < 2:
        return ports[0], ports[1] - spare
    share = (ports[1] - ports[0] + 1) // count
    first = ports[0] + int(worker[2:]) * share
    return first, first + share - 1 - spare


def server_port() -> int:
    """A free loopback port for a server a test starts, from this worker's share of SERVER_PORTS."""
    return free_port("127.0.0.1", worker_share(SERVER_PORTS))

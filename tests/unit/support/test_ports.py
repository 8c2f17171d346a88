"""Test servers' ports: below the ephemeral range, and each xdist worker's share apart from the others'."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.support.ports import SERVER_PORTS, server_port, worker_share
from tests.support.processes import GRPC_PORTS


def test_shares_are_disjoint_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    low, _high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert SERVER_PORTS[1] < GRPC_PORTS[0]
    assert GRPC_PORTS[1] < low
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    shares = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        shares.append(worker_share(SERVER_PORTS))
        first, last = shares[-1]
        assert first <= server_port() <= last
    for (_, end), (start, _) in itertools.pairwise(shares):
        assert end < start
    first, last = worker_share(GRPC_PORTS, spare=1)
    assert last + 1 <= GRPC_PORTS[1]  # a control plane's join port (its port + 1) stays in its share

"""Engines listen on a configured port range, so a NetworkPolicy can name the ports gateways may reach."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from nodeagent.settings import SupervisorSettings
from nodeagent.supervisor.process import free_port
from tests.support.ports import server_port


def _free_pair() -> int:
    """A port whose next port is free too (other processes on a busy machine take ports at random)."""
    for _ in range(50):
        first = server_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", first + 1))
            except OSError:
                continue
            return first
    raise AssertionError("no two free ports side by side")


def test_a_port_is_picked_in_the_range_skipping_busy_ones() -> None:
    first = _free_pair()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", first))
        busy.listen()
        picked = {free_port("127.0.0.1", (first, first + 1)) for _ in range(5)}
    assert picked == {first + 1}


def test_a_full_range_says_so() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"no free port in {port}-{port}"):
            free_port("127.0.0.1", (port, port))


def test_the_setting() -> None:
    assert SupervisorSettings().engine_port_range() is None
    assert SupervisorSettings(engine_ports="30000-30999").engine_port_range() == (30000, 30999)
    with pytest.raises(ValidationError):
        SupervisorSettings(engine_ports="30000")

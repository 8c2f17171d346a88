"""--allocatable-memory caps what the agent offers, minus what its own engines already hold."""

from __future__ import annotations

import os

import psutil
import pytest
from pydantic import ValidationError

from llamafleet.units.sizes import parse_size
from nodeagent.memory import HostMemory, held_bytes
from nodeagent.settings import AgentSettings


def test_without_a_cap_the_machine_is_offered() -> None:
    memory = HostMemory(0, list)
    assert memory.total(64 << 30) == 64 << 30
    assert memory.available() > 0


def test_a_cap_bounds_total_and_subtracts_the_engines_resident_memory() -> None:
    cap = 8 << 30
    mine = held_bytes(os.getpid())  # this process stands in for an engine
    assert 0 < mine <= psutil.Process(os.getpid()).memory_info().rss  # its PSS: shared pages split
    memory = HostMemory(cap, lambda: [os.getpid(), 2**22 + 7])  # a pid that does not exist is skipped
    assert memory.total(64 << 30) == cap
    assert memory.total(4 << 30) == 4 << 30
    assert cap - mine - (64 << 20) <= memory.available() <= cap - mine + (64 << 20)


def test_the_setting_takes_sizes_as_people_write_them() -> None:
    assert parse_size(AgentSettings(allocatable_memory="1.5GiB").allocatable_memory) == 3 << 29
    assert parse_size("512M") == 512 << 20
    with pytest.raises(ValidationError):
        AgentSettings(allocatable_memory="lots")


def test_a_cgroup_limit_caps_what_is_offered_less_the_agents_own_use() -> None:
    """In a container limited to 2 GiB the agent offers at most 2 GiB less what it and its engines hold,
    never the machine's free memory (the kernel would OOM-kill engines that placement let in)."""
    limit = 2 << 30
    memory = HostMemory(0, list, cgroup_limit_bytes=limit)
    mine = held_bytes(os.getpid())
    assert memory.total(64 << 30) == limit
    assert limit - mine - (64 << 20) <= memory.available() <= limit - mine + (64 << 20)
    assert "cgroup" in memory.describe(64 << 30)
    both = HostMemory(1 << 30, list, cgroup_limit_bytes=limit)
    assert both.total(64 << 30) == 1 << 30
    assert HostMemory(0, list).describe(8 << 30) == "8.0 GiB"


def test_what_the_engines_prompt_caches_may_still_take_is_not_offered() -> None:
    """An engine's prompt cache fills to its cap after the replica runs: the unfilled part comes off
    what the node offers, with a cap and without, never below zero."""
    to_come = [1 << 30]
    limit = 4 << 30
    capped = HostMemory(0, list, cgroup_limit_bytes=limit, to_come=lambda: to_come[0])
    plain = HostMemory(0, list, cgroup_limit_bytes=limit)
    assert abs(plain.available() - capped.available() - (1 << 30)) <= 64 << 20
    machine = HostMemory(0, list, to_come=lambda: to_come[0])
    assert abs(HostMemory(0, list).available() - machine.available() - (1 << 30)) <= 256 << 20
    to_come[0] = 1 << 50
    assert capped.available() == machine.available() == 0

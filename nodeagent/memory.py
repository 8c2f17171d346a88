"""The host memory this agent offers: the machine's, or at most ``--allocatable-memory``.

Like a kubelet's allocatable: a node can reserve memory for other work, and a test or a shared
machine can make "this model fits no single node" reproducible. With a cap, what is available is
the smaller of the machine's available memory and the cap minus what this agent's engines and
RPC workers already hold: their proportional set size (PSS), in which the memory-mapped weights two
replicas of one model share count once, not once per replica as resident memory (RSS) counts them.
"""

from __future__ import annotations

from collections.abc import Callable

import psutil


class HostMemory:
    def __init__(self, allocatable_bytes: int, child_pids: Callable[[], list[int]]) -> None:
        self._allocatable = allocatable_bytes
        self._child_pids = child_pids

    def total(self, machine_total: int) -> int:
        return min(machine_total, self._allocatable) if self._allocatable else machine_total

    def available(self) -> int:
        machine = int(psutil.virtual_memory().available)
        if not self._allocatable:
            return machine
        used = 0
        for pid in self._child_pids():
            used += held_bytes(pid)
        return max(0, min(machine, self._allocatable - used))


def held_bytes(pid: int) -> int:
    """A process's share of memory: PSS (from /proc/PID/smaps_rollup), RSS where PSS is unreadable."""
    try:
        process = psutil.Process(pid)
        try:
            return int(process.memory_full_info().pss)
        except (psutil.AccessDenied, AttributeError):
            return int(process.memory_info().rss)
    except psutil.Error:
        return 0

"""The host memory this agent offers: the machine's, or at most ``--allocatable-memory``.

Like a kubelet's allocatable: a node can reserve memory for other work, and a test or a shared
machine can make "this model fits no single node" reproducible. With a cap, what is available is
the smaller of the machine's available memory and the cap minus what this agent's engines and
RPC workers already hold (their resident memory).
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
            try:
                used += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
        return max(0, min(machine, self._allocatable - used))

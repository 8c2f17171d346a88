"""The host memory this agent offers: the machine's, capped by its cgroup's limit and --allocatable-memory.

Like a kubelet's allocatable: a node can reserve memory for other work, and a test or a shared
machine can make "this model fits no single node" reproducible. In a container (a Kubernetes pod with
a memory limit, ``podman run --memory``) the machine's free memory is not ours to offer: the kernel
OOM-kills the container at its cgroup's limit, engines included, so placement must see that limit
instead (v1 ``memory.limit_in_bytes``, v2 ``memory.max``; nodeagent/hardware/cgroups.py).

With a cap, what is available is the smaller of the machine's available memory and the cap minus
what is already held: the engines' and RPC workers' proportional set size (PSS), in which the
memory-mapped weights two replicas of one model share count once, not once per replica as resident
memory (RSS) counts them; under a cgroup limit, the agent's own resident memory too (it lives in
the same cgroup; ``--allocatable-memory`` is what engines may use, the agent's own use aside).

Either way, what the engines may still take is not offered: each engine's prompt cache fills to its
cap (--cache-ram, a Model's cacheRam) as prompts are saved, after the replica was placed and ready.
Placement counts the whole cap for a replica it places; once that replica runs, the unfilled part of
its cap comes off the node's free memory here, so another replica is not placed into it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import psutil

from llamafleet.units.sizes import format_size


class HostMemory:
    def __init__(
        self,
        allocatable_bytes: int,
        child_pids: Callable[[], list[int]],
        cgroup_limit_bytes: int = 0,
        to_come: Callable[[], int] = lambda: 0,
    ) -> None:
        self._allocatable = allocatable_bytes
        self._cgroup_limit = cgroup_limit_bytes
        self._child_pids = child_pids
        # What the engines may still take (their prompt caches filling to --cache-ram): not free, or
        # placement would fill it with another replica that the caches then push out of memory.
        self._to_come = to_come

    def total(self, machine_total: int) -> int:
        caps = [c for c in (self._allocatable, self._cgroup_limit) if c]
        return min([machine_total, *caps])

    def available(self) -> int:
        machine = int(psutil.virtual_memory().available)
        to_come = self._to_come()
        if not self._allocatable and not self._cgroup_limit:
            return max(0, machine - to_come)
        engines = sum(held_bytes(pid) for pid in self._child_pids())
        bounds = [machine]
        if self._allocatable:
            bounds.append(self._allocatable - engines)
        if self._cgroup_limit:
            bounds.append(self._cgroup_limit - engines - held_bytes(os.getpid()))
        return max(0, min(bounds) - to_come)

    def describe(self, machine_total: int) -> str:
        """Where the offered total comes from, for the agent's first log line."""
        total = self.total(machine_total)
        reasons = []
        if self._cgroup_limit and self._cgroup_limit == total:
            reasons.append("its cgroup's memory limit")
        if self._allocatable and self._allocatable == total:
            reasons.append("--allocatable-memory")
        if not reasons:
            return format_size(total)
        return f"{format_size(total)} ({' and '.join(reasons)}) of the machine's {format_size(machine_total)}"


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

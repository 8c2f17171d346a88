"""The CPUs this process may use: its affinity mask, the physical cores in it, and its cgroup's CPU quota.

llama.cpp's own default (4 threads, or every logical CPU of the machine in llama-server) ignores the
container it runs in: in a pod limited to 2 CPUs on a 64-core node it would start 32 threads that the
kernel throttles. What a process may really use is the smallest of
- the CPUs its affinity mask allows (a cpuset, Kubernetes' static CPU manager, ``taskset``), counted as
  physical cores (hyperthread siblings share one core's arithmetic units, and decode is memory-bound:
  llama-server also defaults to physical cores), and
- its cgroup's CPU quota, rounded down: v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``,
  the smallest over the cgroup and its ancestors (in Kubernetes: the pod's CPU limit).
Paths are parameters so tests can point them at a fake /proc and /sys tree.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from nodeagent.domain import CpuBudget
from nodeagent.hardware import cgroups


def detect(
    proc: Path = Path("/proc"), sys: Path = Path("/sys"), allowed: set[int] | None = None
) -> CpuBudget:
    cpus = allowed if allowed is not None else affinity()
    physical = physical_cores(cpus, sys)
    quota = cgroup_quota_millis(proc)
    return budget(len(cpus), physical, quota)


def budget(logical: int, physical: int, quota_millis: int) -> CpuBudget:
    usable = physical
    if quota_millis:
        usable = min(usable, math.floor(quota_millis / 1000))  # 1.5 CPUs: one thread never throttled
    return CpuBudget(logical, physical, quota_millis, max(1, usable))


def affinity() -> set[int]:
    """The CPUs this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def physical_cores(cpus: set[int], sys: Path = Path("/sys")) -> int:
    """Distinct (package, core) pairs among ``cpus``; the CPU count when the topology is unreadable."""
    cores = set()
    for cpu in cpus:
        topology = sys / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add((package, core))
    return max(1, len(cores))


def cgroup_quota_millis(proc: Path = Path("/proc")) -> int:
    """The tightest CPU quota over this process's cgroups (v1 and v2, the cgroup and its ancestors)."""
    return cgroups.cpu_quota_millis(proc)

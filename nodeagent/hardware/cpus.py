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
from collections.abc import Callable
from pathlib import Path

from nodeagent.domain import CpuBudget


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
    try:
        memberships = (proc / "self" / "cgroup").read_text().splitlines()
        mounts = (proc / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return 0
    limits = []
    for line in memberships:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: "0::/path"
            mount = _mount(mounts, "cgroup2", None)
            if mount is not None:
                limits.append(_walk(mount, path, _v2_limit))
        elif "cpu" in controllers.split(","):
            mount = _mount(mounts, "cgroup", "cpu")
            if mount is not None:
                limits.append(_walk(mount, path, _v1_limit))
    found = [limit for limit in limits if limit]
    return min(found) if found else 0


def _mount(mountinfo: list[str], fstype: str, controller: str | None) -> tuple[Path, str] | None:
    """(mount point, the cgroup path mounted there) of the hierarchy, from /proc/self/mountinfo."""
    for line in mountinfo:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail or tail[0] != fstype:
            continue
        if controller is not None and controller not in (tail[2].split(",") if len(tail) > 2 else []):
            continue
        return Path(fields[4]), fields[3]
    return None


def _walk(mount: tuple[Path, str], path: str, read: Callable[[Path], int]) -> int:
    """The smallest limit from the process's cgroup up to the hierarchy's root as mounted."""
    point, root = mount
    relative = path[len(root) :] if root != "/" and path.startswith(root) else path
    here = point / relative.lstrip("/")
    smallest = 0
    while True:
        limit = read(here)
        if limit and (not smallest or limit < smallest):
            smallest = limit
        if here == point or point not in here.parents:
            return smallest
        here = here.parent


def _v2_limit(folder: Path) -> int:
    try:
        quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
    except OSError:
        return 0
    if quota == "max" or not period:
        return 0
    return _millis(int(quota), int(period))


def _v1_limit(folder: Path) -> int:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return 0
    return _millis(quota, period) if quota > 0 else 0


def _millis(quota: int, period: int) -> int:
    return max(1, round(1000 * quota / period)) if period > 0 else 0

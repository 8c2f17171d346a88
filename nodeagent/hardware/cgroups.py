"""This process's cgroup limits, v1 and v2: the CPU quota and the memory limit a container runs under.

Each limit is the tightest over the process's cgroup and its ancestors as mounted (in Kubernetes the
pod's cgroup holds the limit and the container's beneath it may say "max"; inside a container with a
private cgroup namespace the mount's root is the container's own cgroup). Found from
/proc/self/cgroup and /proc/self/mountinfo; ``proc`` is a parameter so tests can point it at a fake
/proc and cgroup tree shaped like a real machine's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# v1 writes "no limit" as the largest page-aligned signed 64-bit number; anything this large is none.
V1_UNLIMITED = 1 << 60


def cpu_quota_millis(proc: Path = Path("/proc")) -> int:
    """The tightest CPU quota in thousandths of a CPU (0: none): v2 ``cpu.max``, v1 ``cpu.cfs_*``."""
    return _tightest(proc, "cpu", _v2_cpu, _v1_cpu)


def memory_limit_bytes(proc: Path = Path("/proc")) -> int:
    """The tightest memory limit in bytes (0: none): v2 ``memory.max``, v1 ``memory.limit_in_bytes``."""
    return _tightest(proc, "memory", _v2_memory, _v1_memory)


def _tightest(proc: Path, controller: str, v2: Callable[[Path], int], v1: Callable[[Path], int]) -> int:
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
                limits.append(_walk(mount, path, v2))
        elif controller in controllers.split(","):
            mount = _mount(mounts, "cgroup", controller)
            if mount is not None:
                limits.append(_walk(mount, path, v1))
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


def _read(file: Path) -> str | None:
    try:
        return file.read_text().strip()
    except OSError:
        return None


def _v2_cpu(folder: Path) -> int:
    quota, _, period = (_read(folder / "cpu.max") or "max").partition(" ")
    if quota == "max" or not period:
        return 0
    return _millis(int(quota), int(period))


def _v1_cpu(folder: Path) -> int:
    try:
        quota = int(_read(folder / "cpu.cfs_quota_us") or "-1")
        period = int(_read(folder / "cpu.cfs_period_us") or "0")
    except ValueError:
        return 0
    return _millis(quota, period) if quota > 0 else 0


def _millis(quota: int, period: int) -> int:
    return max(1, round(1000 * quota / period)) if period > 0 else 0


def _v2_memory(folder: Path) -> int:
    value = _read(folder / "memory.max") or "max"
    return int(value) if value.isdigit() else 0


def _v1_memory(folder: Path) -> int:
    value = _read(folder / "memory.limit_in_bytes") or ""
    return int(value) if value.isdigit() and int(value) < V1_UNLIMITED else 0

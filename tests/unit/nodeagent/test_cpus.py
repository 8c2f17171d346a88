"""The CPUs a process may use, read from fake /proc and /sys trees shaped like real machines':
affinity, hyperthread siblings, cgroup v1 and v2 quotas (nested, as in a Kubernetes pod), none."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeagent.hardware import cgroups
from nodeagent.hardware.cpus import budget, cgroup_quota_millis, detect, physical_cores

V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
V1_MOUNTS = (
    "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "33 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
)


def fake_proc(tmp: Path, cgroup: str, mountinfo: str) -> Path:
    proc = tmp / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "mountinfo").write_text(mountinfo.replace("/sys/fs/cgroup", str(tmp / "cg")))
    return proc


def write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)


def test_no_quota_no_limit(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, "0::/user.slice\n", V2_MOUNTS)
    write(tmp_path / "cg" / "user.slice", cpu_max="max 100000\n")
    assert cgroup_quota_millis(proc) == 0


def test_a_v2_pod_limit_above_the_containers_cgroup_counts(tmp_path: Path) -> None:
    """Kubernetes: the pod's cgroup holds the limit, the container's beneath it may say max."""
    pod = tmp_path / "cg" / "kubepods.slice" / "kubepods-pod1.slice"
    proc = fake_proc(tmp_path, "0::/kubepods.slice/kubepods-pod1.slice/cri-abc.scope\n", V2_MOUNTS)
    write(pod, cpu_max="150000 100000\n")
    write(pod / "cri-abc.scope", cpu_max="max 100000\n")
    assert cgroup_quota_millis(proc) == 1500


def test_inside_a_container_the_cgroup_namespace_root_is_the_mount(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, "0::/\n", V2_MOUNTS)
    write(tmp_path / "cg", cpu_max="250000 100000\n")
    assert cgroup_quota_millis(proc) == 2500


def test_v1_quota_and_an_unlimited_parent(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, "5:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n0::/\n", V1_MOUNTS)
    hierarchy = tmp_path / "cg" / "cpu,cpuacct"
    write(hierarchy, cpu_cfs_quota_us="-1\n", cpu_cfs_period_us="100000\n")
    write(hierarchy / "docker" / "x", cpu_cfs_quota_us="50000\n", cpu_cfs_period_us="100000\n")
    assert cgroup_quota_millis(proc) == 500


def test_unreadable_proc_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_quota_millis(tmp_path / "nothing") == 0


def topology(tmp: Path, cores: dict[int, tuple[int, int]]) -> Path:
    sys = tmp / "sys"
    for cpu, (package, core) in cores.items():
        folder = sys / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return sys


def test_hyperthread_siblings_are_one_core_and_affinity_limits(tmp_path: Path) -> None:
    sys = topology(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)})  # 2 cores, 2 threads each
    assert physical_cores({0, 1, 2, 3}, sys) == 2
    assert physical_cores({0, 2}, sys) == 1  # pinned to one core's two siblings
    assert physical_cores({0, 1}, tmp_path / "missing") == 2  # no topology: count CPUs


@pytest.mark.parametrize(
    ("logical", "physical", "quota", "usable"),
    [(8, 4, 0, 4), (8, 4, 2000, 2), (8, 4, 1500, 1), (8, 4, 500, 1), (2, 2, 16000, 2)],
)
def test_usable_is_the_smallest_of_cores_and_quota_rounded_down(
    logical: int, physical: int, quota: int, usable: int
) -> None:
    assert budget(logical, physical, quota).usable == usable


def test_describe_says_where_the_count_comes_from(tmp_path: Path) -> None:
    sys = topology(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)})
    proc = fake_proc(tmp_path, "0::/\n", V2_MOUNTS)
    write(tmp_path / "cg", cpu_max="150000 100000\n")
    found = detect(proc, sys, allowed={0, 1, 2, 3})
    assert found.usable == 1
    assert found.describe() == "1 (cgroup quota 1.5 CPUs of 2 cores, 4 logical)"
    assert budget(2, 2, 0).describe() == "2 (2 cores)"


def test_v1_memory_limit_of_a_container_and_unlimited_ancestors(tmp_path: Path) -> None:
    """podman run --memory 2g on a v1 host: the container's cgroup holds the limit; v1 writes "none"
    as a huge number."""
    proc = fake_proc(tmp_path, "5:memory:/libpod_parent/libpod-x\n4:cpu,cpuacct:/\n", V1_MOUNTS)
    hierarchy = tmp_path / "cg" / "memory"
    write(hierarchy, memory_limit_in_bytes="9223372036854771712\n")
    write(hierarchy / "libpod_parent" / "libpod-x", memory_limit_in_bytes=f"{2 << 30}\n")
    assert cgroups.memory_limit_bytes(proc) == 2 << 30


def test_v2_pod_memory_limit_above_the_container(tmp_path: Path) -> None:
    pod = tmp_path / "cg" / "kubepods.slice" / "kubepods-pod1.slice"
    proc = fake_proc(tmp_path, "0::/kubepods.slice/kubepods-pod1.slice/cri-abc.scope\n", V2_MOUNTS)
    write(pod, memory_max=f"{3 << 30}\n")
    write(pod / "cri-abc.scope", memory_max="max\n")
    assert cgroups.memory_limit_bytes(proc) == 3 << 30
    assert cgroups.memory_limit_bytes(fake_proc(tmp_path / "none", "0::/\n", V2_MOUNTS)) == 0

"""The node's hardware: CPU and RAM from the OS, devices from a llama.cpp probe run in a child process."""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import socket
import sys
from pathlib import Path

import psutil

from nodeagent.domain import Device, HostInventory
from nodeagent.hardware import cpus, nvml

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 60.0


def cpu_model() -> str:
    """The CPU's marketing name; /proc/cpuinfo on Linux, platform otherwise."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# CPU features that change what llama.cpp allocates or how fast it runs (e.g. weight repacking).
LLAMA_CPU_FEATURES = frozenset(
    {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "amx_tile", "amx_int8",
     "asimd", "asimddp", "i8mm", "sve", "sve2"}
)  # fmt: skip


def cpu_flags() -> tuple[str, ...]:
    """The llama.cpp-relevant feature flags from /proc/cpuinfo (x86 "flags", ARM "Features")."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return ()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return tuple(sorted(set(value.split()) & LLAMA_CPU_FEATURES))
    return ()


def _build_cpu_flags(probe: dict[str, object]) -> tuple[str, ...]:
    """The features llama.cpp's build uses (from the probe), else what the CPU reports."""
    features = probe.get("cpu_features")
    if isinstance(features, list):
        return tuple(str(f) for f in features)
    return cpu_flags()


def host_memory() -> tuple[int, int]:
    vm = psutil.virtual_memory()
    return int(vm.total), int(vm.available)


async def probe_llama_devices(python: str = sys.executable) -> dict[str, object]:
    """Run ``python -m nodeagent.hardware.probe``; a crash there must never reach the agent."""
    proc = await asyncio.create_subprocess_exec(
        python, "-m", "nodeagent.hardware.probe",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("llama.cpp device probe timed out after %.0fs; reporting CPU only", PROBE_TIMEOUT_S)
        return {}
    if proc.returncode != 0:
        log.warning(
            "llama.cpp device probe failed (exit %s); reporting CPU only. stderr: %s",
            proc.returncode, err.decode(errors="replace").strip()[-500:],
        )  # fmt: skip
        return {}
    try:
        result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        log.warning("llama.cpp device probe printed no JSON; reporting CPU only")
        return {}
    return result


def _devices_from_probe(probe: dict[str, object], ram_total: int, ram_free: int) -> tuple[Device, ...]:
    raw = probe.get("devices")
    devices: list[Device] = []
    if isinstance(raw, list):
        for d in raw:
            if not isinstance(d, dict):
                continue
            devices.append(
                Device(
                    name=str(d.get("name", "")),
                    description=str(d.get("description", "")),
                    kind=str(d.get("kind", "cpu")),
                    backend=str(d.get("backend", "")),
                    memory_total_bytes=int(d.get("memory_total_bytes", 0)),
                    memory_free_bytes=int(d.get("memory_free_bytes", 0)),
                )
            )
    if not devices:  # no probe: the CPU is always there
        devices.append(Device("CPU", cpu_model(), "cpu", "CPU", ram_total, ram_free))
    return tuple(devices)


async def collect(python: str = sys.executable) -> HostInventory:
    probe = await probe_llama_devices(python)
    total, free = host_memory()
    backends = probe.get("backends")
    return HostInventory(
        hostname=socket.gethostname(),
        cpu_model=cpu_model(),
        cpu_flags=_build_cpu_flags(probe),
        nvml=nvml.collect(),
        cpu_physical_cores=psutil.cpu_count(logical=False) or 1,
        cpu_logical_cores=psutil.cpu_count(logical=True) or 1,
        ram_total_bytes=total,
        ram_free_bytes=free,
        devices=_devices_from_probe(probe, total, free),
        backends=tuple(str(b) for b in backends) if isinstance(backends, list) else (),
        llama_cpp_version=str(probe.get("llama_cpp_python", "")),
        cpus=cpus.detect(),
    )

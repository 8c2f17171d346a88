"""NVML collection. This machine has no NVIDIA driver, so the real path is 'absent'; the GPU path runs
against a stand-in for the ``pynvml`` module (a fake: there is no NVIDIA driver here). It mirrors
nvidia-ml-py's calls, return shapes (memory info with .total/.free, bytes-or-str names) and error
class, as documented in NVML's API reference."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest

from nodeagent.hardware import nvml


def test_without_a_driver_there_is_no_report() -> None:
    assert nvml.collect() is None  # nvidia-ml-py is installed; libnvidia-ml is not


@dataclass
class _Memory:
    total: int
    free: int
    used: int


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    class NVMLError(Exception):
        pass

    fake = types.ModuleType("pynvml")
    fake.NVMLError = NVMLError  # type: ignore[attr-defined]
    fake.nvmlInit = lambda: calls.append("init")  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    fake.nvmlSystemGetCudaDriverVersion = lambda: 12040  # type: ignore[attr-defined]
    fake.nvmlSystemGetDriverVersion = lambda: b"550.54.15"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: f"handle{i}"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMemoryInfo = lambda h: _Memory(80 << 30, 79 << 30, 1 << 30)  # type: ignore[attr-defined]
    fake.nvmlDeviceGetName = lambda h: "NVIDIA H100 80GB HBM3"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUUID = lambda h: "GPU-1234"  # type: ignore[attr-defined]

    def utilization(handle: str) -> object:
        raise NVMLError("Not Supported")

    fake.nvmlDeviceGetUtilizationRates = utilization  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return calls


def test_a_gpu_is_reported_with_driver_versions_and_shut_down_after(one_gpu: list[str]) -> None:
    report = nvml.collect()
    assert report is not None
    assert report.driver_version == "550.54.15"
    assert report.cuda_driver_version == "12.4"
    (gpu,) = report.gpus
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.uuid == "GPU-1234"
    assert gpu.memory_total_bytes == 80 << 30
    assert gpu.memory_free_bytes == 79 << 30
    assert gpu.utilization_percent == 0  # unsupported counters do not fail the report
    assert one_gpu == ["init", "shutdown"]

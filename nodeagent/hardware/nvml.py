"""The NVIDIA driver's view of this node's GPUs through NVML (nvidia-ml-py), when a driver is present.

NVML reports what llama.cpp's device list does not: the driver and CUDA versions, each GPU's
UUID and utilization. On nodes without an NVIDIA driver it is simply absent (None), never an
error. It reads the driver's shared library only, so it is safe in the agent's own process.
"""

from __future__ import annotations

import logging
from typing import Any

from nodeagent.domain import NvmlGpu, NvmlReport

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def collect() -> NvmlReport | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None  # no NVIDIA driver on this node
    try:
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                utilization = 0  # not supported on every GPU
            gpus.append(
                NvmlGpu(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    memory_total_bytes=int(memory.total),
                    memory_free_bytes=int(memory.free),
                    utilization_percent=utilization,
                )
            )
        return NvmlReport(
            driver_version=_text(pynvml.nvmlSystemGetDriverVersion()),
            cuda_driver_version=f"{cuda // 1000}.{cuda % 1000 // 10}",
            gpus=tuple(gpus),
        )
    except pynvml.NVMLError as exc:
        log.warning("NVML is present but failed (%s); reporting GPUs from llama.cpp only", exc)
        return None
    finally:
        pynvml.nvmlShutdown()

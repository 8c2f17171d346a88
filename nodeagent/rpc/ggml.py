"""ctypes bindings for llama.cpp's RPC backend (llama-cpp-python has none), and the head's device layout.

The library is ``libggml.so.0`` from where llama-cpp-python loads llama.cpp (``lib_dir``), the copy
it loads itself: opening ``libggml.so`` would map a second copy with its own device registry, and an
RPC device registered there would be invisible to llama.cpp.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import socket
from dataclasses import dataclass
from typing import Any

import llama_cpp

from llamafleet.core.errors import InvalidRequest

_DEVICE_TYPE_CPU = 0  # enum ggml_backend_dev_type
_DEVICE_TYPE_GPU = 1
_SPLIT_MODE_LAYER = 1


def lib_dir() -> str:
    """Where llama-cpp-python loads llama.cpp from: ``LLAMA_CPP_LIB_PATH`` when set (e.g. a CUDA build,
    tools/llama_cpp_cuda.py), else its wheel's ``lib/``."""
    return os.environ.get("LLAMA_CPP_LIB_PATH") or os.path.join(os.path.dirname(llama_cpp.__file__), "lib")


@functools.cache
def library() -> ctypes.CDLL:
    lib = ctypes.CDLL(os.path.join(lib_dir(), "libggml.so.0"))
    lib.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    lib.ggml_backend_dev_name.restype = ctypes.c_char_p
    lib.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_rpc_start_server.restype = None
    lib.ggml_backend_rpc_start_server.argtypes = [
        ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p),
    ]  # fmt: skip
    lib.ggml_backend_rpc_add_server.restype = ctypes.c_void_p
    lib.ggml_backend_rpc_add_server.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_register.restype = None
    lib.ggml_backend_register.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_reg_dev_get.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_count.argtypes = []
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    lib.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_name.restype = ctypes.c_char_p
    lib.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    return lib


def gpu_devices() -> list[int]:
    """This process's own GPUs as llama.cpp sees them (none with a CPU-only build), in its order; RPC
    workers it has registered count as GPUs to llama.cpp and are left out."""
    lib = library()
    devices = [lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count())]
    return [
        d for d in devices
        if lib.ggml_backend_dev_type(d) == _DEVICE_TYPE_GPU
        and lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(d)) != b"RPC"
    ]  # fmt: skip


def served_devices(gpu: bool = True) -> list[int]:
    """What an RPC worker serves: with ``gpu``, the node's GPUs, every one (the head sees each as a
    device and learns its free memory through the RPC protocol); its CPU without, or when it has none."""
    return (gpu_devices() if gpu else []) or [library().ggml_backend_dev_by_type(_DEVICE_TYPE_CPU)]


def start_server(endpoint: str, cache_dir: str, n_threads: int, gpu: bool = True) -> None:
    """Serve ``served_devices`` to one head at a time on ``endpoint``; returns only when the server fails."""
    lib = library()
    served = served_devices(gpu)
    devices = (ctypes.c_void_p * len(served))(*served)
    lib.ggml_backend_rpc_start_server(endpoint.encode(), cache_dir.encode(), n_threads, len(served), devices)


@dataclass(frozen=True)
class RemotePart:
    """Layers ``first``..``last`` (inclusive) of the model, on the RPC worker at ``endpoint``."""

    endpoint: str
    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> RemotePart:
        """``HOST:PORT=FIRST-LAST``."""
        match = re.fullmatch(r"(?P<endpoint>[^=\s]+:\d+)=(?P<first>\d+)-(?P<last>\d+)", text)
        if match is None or int(match["first"]) > int(match["last"]):
            raise InvalidRequest(f"a remote part is HOST:PORT=FIRST-LAST, got {text!r}", "rpc_parts")
        return cls(match["endpoint"], int(match["first"]), int(match["last"]))


@dataclass
class DeviceLayout:
    """What llama_model_params needs so each device holds exactly its layers (kept alive with the model)."""

    devices: ctypes.Array[ctypes.c_void_p]
    tensor_split: ctypes.Array[ctypes.c_float]
    n_gpu_layers: int

    def apply(self, params: Any) -> None:
        """Set them on a ``llama_cpp.llama_model_params``."""
        params.devices = ctypes.cast(self.devices, ctypes.c_void_p)
        params.tensor_split = self.tensor_split
        params.n_gpu_layers = self.n_gpu_layers
        params.split_mode = _SPLIT_MODE_LAYER


def reachable(endpoint: str, timeout_s: float = 5.0) -> None:
    """Raise InvalidRequest unless ``endpoint`` accepts a connection: llama.cpp aborts the whole
    process when it cannot connect to a worker, so say it in a sentence first."""
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InvalidRequest(f"cannot reach the RPC worker at {endpoint}: {reason}", "rpc_parts") from exc


def layout(parts: list[RemotePart], n_layer: int, head_gpu: bool = False) -> DeviceLayout:
    """Remote parts from layer 0 upwards, then the head with the remaining layers and the output: on
    its first GPU when ``head_gpu`` and it has one, else on its CPU.

    llama.cpp assigns layer ``il`` (the output counts as layer ``n_layer``) to the first device whose
    cumulative share of ``tensor_split`` exceeds ``il / (n_layer + 1)``; boundaries at half a layer
    keep float rounding from moving a layer across.
    """
    parts = sorted(parts, key=lambda p: p.first)
    expected = 0
    for part in parts:
        if part.first != expected:
            raise InvalidRequest(f"remote parts must cover layers from 0 without gaps; {part} starts at "
                                 f"{part.first}, expected {expected}", "rpc_parts")  # fmt: skip
        expected = part.last + 1
    if expected > n_layer - 1:
        raise InvalidRequest(
            f"the head must keep at least one of the {n_layer} layers (and the output)", "rpc_parts"
        )
    for part in parts:
        reachable(part.endpoint)
    lib = library()
    devices = (ctypes.c_void_p * (len(parts) + 2))()
    for i, part in enumerate(parts):
        registry = lib.ggml_backend_rpc_add_server(part.endpoint.encode())
        if not registry:
            raise InvalidRequest(f"cannot reach the RPC worker at {part.endpoint}", "rpc_parts")
        lib.ggml_backend_register(registry)
        devices[i] = lib.ggml_backend_reg_dev_get(registry, 0)
    gpus = gpu_devices() if head_gpu else []
    devices[len(parts)] = gpus[0] if gpus else lib.ggml_backend_dev_by_type(_DEVICE_TYPE_CPU)
    split = (ctypes.c_float * llama_cpp.llama_max_devices())()
    previous = 0.0
    for i, part in enumerate(parts):
        boundary = part.last + 1 - 0.5
        split[i] = boundary - previous
        previous = boundary
    split[len(parts)] = (n_layer + 1) - previous
    return DeviceLayout(devices, split, n_layer + 1)

"""Child-process probe: lists the devices llama.cpp's ggml registry sees, printed as one JSON line.

Run as `python -m nodeagent.hardware.probe`. It loads native code, so the agent only ever runs
it in a subprocess. llama-cpp-python does not bind ggml's device-registry API, so we call it
through ctypes on the libggml that llama-cpp-python ships.
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path
from typing import Any

# enum ggml_backend_dev_type
_DEVICE_KINDS = {0: "cpu", 1: "gpu", 2: "gpu", 3: "accel"}


def _ggml() -> ctypes.CDLL:
    import llama_cpp  # loads libllama and, with it, libggml into this process

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    for name in ("libggml.so", "libggml.dylib", "ggml.dll"):
        candidate = lib_dir / name
        if candidate.exists():
            return ctypes.CDLL(str(candidate))
    raise FileNotFoundError(f"libggml not found in {lib_dir}")


def _bind(lib: ctypes.CDLL) -> None:
    vp, sz, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
    signatures: dict[str, tuple[list[Any], Any]] = {
        "ggml_backend_dev_count": ([], sz),
        "ggml_backend_dev_get": ([sz], vp),
        "ggml_backend_dev_name": ([vp], cp),
        "ggml_backend_dev_description": ([vp], cp),
        "ggml_backend_dev_type": ([vp], ctypes.c_int),
        "ggml_backend_dev_memory": ([vp, ctypes.POINTER(sz), ctypes.POINTER(sz)], None),
        "ggml_backend_dev_backend_reg": ([vp], vp),
        "ggml_backend_reg_name": ([vp], cp),
        "ggml_backend_reg_count": ([], sz),
        "ggml_backend_reg_get": ([sz], vp),
    }
    for name, (argtypes, restype) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype


# ggml_cpu_has_<name>() → the /proc/cpuinfo flag of the same feature (what llamafleet.fit keys on)
_CPU_FEATURES = {"avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512": "avx512f",
                 "avx512_vnni": "avx512_vnni", "amx_int8": "amx_int8", "neon": "asimd",
                 "dotprod": "asimddp", "matmul_int8": "i8mm", "sve": "sve"}  # fmt: skip


def cpu_features(lib_dir: Path) -> list[str]:
    """The CPU features this llama.cpp build uses (compiled in and present), as cpuinfo names them."""
    lib = ctypes.CDLL(str(lib_dir / "libggml-cpu.so"))
    found = []
    for ggml_name, flag in _CPU_FEATURES.items():
        fn = getattr(lib, f"ggml_cpu_has_{ggml_name}", None)
        if fn is not None:
            fn.restype = ctypes.c_int
            if fn():
                found.append(flag)
    return sorted(found)


def probe() -> dict[str, Any]:
    import llama_cpp

    lib = _ggml()
    _bind(lib)
    devices = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        backend = lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(dev)).decode()
        kind = "rpc" if backend.upper() == "RPC" else _DEVICE_KINDS.get(lib.ggml_backend_dev_type(dev), "gpu")
        devices.append(
            {
                "name": lib.ggml_backend_dev_name(dev).decode(),
                "description": lib.ggml_backend_dev_description(dev).decode(),
                "kind": kind,
                "backend": backend,
                "memory_total_bytes": total.value,
                "memory_free_bytes": free.value,
            }
        )
    backends = [lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i)).decode()
                for i in range(lib.ggml_backend_reg_count())]  # fmt: skip
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "supports_rpc": bool(llama_cpp.llama_supports_rpc()),
        "supports_gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "backends": backends,
        "devices": devices,
        "cpu_features": _cpu_features_or_none(),
    }


def _cpu_features_or_none() -> list[str] | None:
    import llama_cpp

    try:
        return cpu_features(Path(llama_cpp.__file__).parent / "lib")
    except OSError:  # another platform's library name, or a build without a separate CPU backend
        return None


def main() -> int:
    print(json.dumps(probe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

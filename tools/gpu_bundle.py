"""Packs .gpu/: everything bench/gpu_check.sh needs on a lent GPU machine, which has no network.

    .venv/bin/python tools/gpu_bundle.py            # or: make gpu-bundle

The device tool carries the working tree and the paths named in ``carry`` (64 MiB in all). This
folder holds, in that budget:

    llama-cuda.tar.gz    llama.cpp built for CUDA (tools/llama_cpp_cuda.py): libraries and llama-server
    llama_cpp_py.tar.gz  llama-cpp-python's Python package without its CPU libraries
    wheels/              the Python 3.12 wheels the engine, the fit probe and the RPC worker import
                         that the machine's image lacks (its list: the device tool's KINDS.md)
    models/              SmolLM2's and gemma3-270m's headers (tests/support/skeleton_gguf.py)
    BUNDLE.json          what is in it, and its size

Versions are this virtualenv's, so the device runs what the tests ran here.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Imported by the engine, the fit probe, the RPC worker and gpu_check, and not in the GPU image (or in
# an older version there): pinned to this virtualenv's versions.
WHEELS = (
    "annotated-types", "cffi", "pycparser", "cryptography", "diskcache", "fastapi", "gguf", "grpcio",
    "protobuf", "pydantic", "pydantic-core", "pydantic-settings", "python-dotenv", "sniffio", "starlette",
    "typing-extensions", "typing-inspection", "uvicorn",
)  # fmt: skip
PLATFORMS = (
    "manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64",
    "manylinux2014_x86_64", "manylinux1_x86_64",
)  # fmt: skip
MIB = 2**20


def say(message: str) -> None:
    print(f"gpu_bundle: {message}", flush=True)


def wheels(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platform_flags = [flag for p in PLATFORMS for flag in ("--platform", p)]
    say(f"downloading {len(pins)} Python 3.12 wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "--implementation", "cp", *platform_flags, "--dest", str(dest), *pins],
        check=True,
    )  # fmt: skip


def llama_cpp_python(dest: Path) -> None:
    """The installed llama_cpp package, its lib/ left out: the CUDA build's libraries go there."""
    import llama_cpp

    package = Path(llama_cpp.__file__).parent

    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        left_out = member.name.startswith("llama_cpp/lib/") or "__pycache__" in member.name
        return None if left_out else member

    with tarfile.open(dest, "w:gz") as tar:
        tar.add(package, arcname="llama_cpp", filter=keep)


def main() -> int:
    bundle = ROOT / ".gpu"
    shutil.rmtree(bundle, ignore_errors=True)
    bundle.mkdir()
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "llama_cpp_cuda.py"), "--out", str(bundle)], check=True
    )
    llama_cpp_python(bundle / "llama_cpp_py.tar.gz")
    wheels(bundle / "wheels")
    from bench.gpu_check import make_skeletons, real_models

    make_skeletons(bundle / "models", real_models())
    files = {str(p.relative_to(bundle)): p.stat().st_size for p in sorted(bundle.rglob("*")) if p.is_file()}
    total = sum(files.values())
    (bundle / "BUNDLE.json").write_text(json.dumps({"bytes": total, "files": files}, indent=1))
    say(f".gpu/ holds {total / MIB:.1f} MiB in {len(files)} files (the device tool carries 64 MiB in all, "
        f"the working tree included)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

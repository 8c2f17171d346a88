"""Builds llama.cpp for NVIDIA GPUs on a machine without one: the engine's libraries and llama-server.

Stdlib only, like tools/llama_cpp_wheel.py. What it makes, once per machine (cached):

    ~/.cache/llamafleet/cuda/<key>/llama-cuda.tar.gz
        lib/   libllama, libggml, libggml-base, libggml-cpu, libggml-rpc, libggml-cuda (RPATH $ORIGIN)
        bin/   llama-server (RPATH $ORIGIN/../lib): the baseline, built from the same sources
        BUILD.json   versions, flags, sizes, build time

The sources are the llama.cpp vendored in the llama-cpp-python sdist of the version the project installs
(tools/llama_cpp_wheel.VERSION), so the engine runs these libraries through llama-cpp-python's own
ctypes bindings: ``LLAMA_CPP_LIB_PATH=<unpacked>/lib`` makes it load them instead of its CPU ones.

The compiler is NVIDIA's CUDA 13.0 toolchain as PyPI wheels (nvcc, runtime, cuBLAS, CCCL, CRT, NVVM):
no system CUDA, no GPU, no driver. One architecture (``--arch``, default 90: H100/H200) as machine code
only keeps the archive small enough to travel to a lent GPU machine (the device tool carries 64 MiB).
The driver library (libcuda.so.1) is linked against a stub generated from cuda.h; the real one is the
GPU machine's. At run time the libraries need libcudart.so.13, libcublas.so.13 and libcublasLt.so.13
(CUDA 13's runtime, which GPU machines have with their toolkit or PyTorch; not in the archive: cuBLAS
alone is 600 MB).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_wheel import VERSION, default_cache_dir, progress_of

# CUDA 13.0: the newest toolkit a 580 driver (the lent H100/H200 machines') runs without a newer driver.
TOOLKIT = (
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cublas==13.0.2.14",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-nvvm==13.0.88",
)
TARGETS = ("llama", "ggml-cuda", "ggml-rpc", "llama-server")
ARCHIVE = "llama-cuda.tar.gz"
RUNTIME_LIBS = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13")


def cmake_flags(arch: str, toolkit: Path) -> list[str]:
    return [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON",
        "-DGGML_NATIVE=OFF",
        "-DGGML_RPC=ON",
        "-DGGML_CUDA=ON",
        f"-DCMAKE_CUDA_ARCHITECTURES={arch}-real",
        f"-DCMAKE_CUDA_COMPILER={toolkit / 'bin' / 'nvcc'}",
        f"-DCUDAToolkit_ROOT={toolkit}",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",
        "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
        "-DCMAKE_INSTALL_RPATH=$ORIGIN:$ORIGIN/../lib",
        # llama-server links libggml-cuda, whose own needs (cuBLAS, the driver) the linker must find.
        f"-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,{toolkit / 'lib'}:{toolkit / 'lib' / 'stubs'}",
    ]


def build_key(arch: str) -> str:
    digest = hashlib.sha256(f"{VERSION}|{'|'.join(TOOLKIT)}|{arch}|{' '.join(TARGETS)}".encode()).hexdigest()
    return f"llama-cpp-{VERSION}-cuda13.0-sm{arch}-{digest[:10]}"


def say(message: str) -> None:
    print(f"llamafleet: {message}", flush=True)


def run(cmd: list[str], **kwargs: object) -> None:
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def fetch_toolkit(cache: Path) -> Path:
    """NVIDIA's wheels unpacked into one CUDA layout (bin, include, lib, nvvm); returns its root."""
    root = cache / "toolkit-13.0"
    done = root / ".complete"
    home = root / "nvidia" / "cu13"
    if done.exists():
        return home
    shutil.rmtree(root, ignore_errors=True)
    wheels = Path(tempfile.mkdtemp(prefix="llamafleet-cuda-"))
    say(f"downloading CUDA 13.0's compiler and libraries from PyPI ({len(TOOLKIT)} wheels, ~520 MB)")
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--dest", str(wheels), *TOOLKIT])  # fmt: skip
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(root)
    shutil.rmtree(wheels, ignore_errors=True)
    for tool in (home / "bin").iterdir():
        tool.chmod(0o755)
    for tool in (home / "nvvm" / "bin").glob("*"):
        tool.chmod(0o755)
    lib = home / "lib"
    for versioned in lib.glob("*.so.*"):  # the linker looks for the unversioned names
        plain = lib / (versioned.name.split(".so.")[0] + ".so")
        if not plain.exists():
            plain.symlink_to(versioned.name)
    (home / "lib64").symlink_to("lib")  # where nvcc.profile and CMake look on x86-64
    write_driver_stub(home)
    done.write_text("\n".join(TOOLKIT))
    return home


def write_driver_stub(home: Path) -> None:
    """lib/stubs/libcuda.so: every function cuda.h declares, doing nothing, with the driver's soname.

    Only for linking (ggml-cuda calls the driver's virtual-memory API); the GPU machine's own
    libcuda.so.1 is what runs."""
    names: set[str] = set()
    for define in ([], ["-D__CUDA_API_VERSION_INTERNAL"]):
        cmd = ["gcc", "-E", "-P", *define, "-I", str(home / "include"), str(home / "include" / "cuda.h")]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        names |= set(re.findall(r"\bCUresult\s+(?:CUDAAPI\s+)?(cu[A-Za-z0-9_]+)\s*\(", out))
    stubs = home / "lib" / "stubs"
    stubs.mkdir(parents=True, exist_ok=True)
    source = stubs / "libcuda.c"
    source.write_text("".join(f"int {name}(void) {{ return 999; }}\n" for name in sorted(names)))
    run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(stubs / "libcuda.so"), str(source)])
    (stubs / "libcuda.so.1").symlink_to("libcuda.so")  # the name programs linked to it ask for


def fetch_sources(work: Path) -> Path:
    say(f"downloading the llama-cpp-python {VERSION} sdist (its vendored llama.cpp is what the engine runs)")
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         f"llama-cpp-python=={VERSION}", "--dest", str(work)])  # fmt: skip
    with tarfile.open(next(work.glob("llama_cpp_python-*.tar.gz"))) as sdist:
        sdist.extractall(work, filter="data")
    return work / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"


def compile_(source: Path, build: Path, toolkit: Path, arch: str, jobs: int, log_path: Path) -> None:
    env = dict(os.environ, PATH=f"{toolkit / 'bin'}{os.pathsep}{os.environ['PATH']}",
               CUDA_HOME=str(toolkit), LIBRARY_PATH=str(toolkit / "lib" / "stubs"))  # fmt: skip
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    with log_path.open("w") as log:
        say("configuring llama.cpp with CUDA (arch " + arch + ")")
        configure = [
            "cmake", "-S", str(source), "-B", str(build), *generator, *cmake_flags(arch, toolkit),
            f"-DCUDA_cuda_driver_LIBRARY={toolkit / 'lib' / 'stubs' / 'libcuda.so'}",
        ]  # fmt: skip
        subprocess.run(configure, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
        say(f"compiling with {jobs} job(s); full log: {log_path}")
        started = time.monotonic()
        cmd = ["cmake", "--build", str(build), "-j", str(jobs), "--target", *TARGETS]
        with subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            assert proc.stdout is not None
            shown = -1
            for line in proc.stdout:
                log.write(line)
                pct = progress_of(line)
                if pct is not None and pct // 5 != shown // 5:
                    shown = pct
                    bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
                    print(f"  compile [{bar}] {pct:3d}%  {time.monotonic() - started:5.0f}s", flush=True)
            if proc.wait() != 0:
                tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
                raise SystemExit(f"llamafleet: compiling llama.cpp with CUDA failed. Last lines:\n{tail}")


def package(build: Path, dest: Path, info: dict[str, object]) -> Path:
    """lib/ (the shared libraries, symlinks kept) and bin/llama-server in one archive."""
    staging = dest / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "lib").mkdir(parents=True)
    (staging / "bin").mkdir()
    for library in sorted((build / "bin").glob("lib*.so*")):
        target = staging / "lib" / library.name
        if library.is_symlink():
            target.symlink_to(os.readlink(library))
        else:
            shutil.copy2(library, target)
    for program in ("llama-server",):
        shutil.copy2(build / "bin" / program, staging / "bin" / program)
    files = [p for p in sorted((staging / "lib").iterdir()) if not p.is_symlink()]
    run(["strip", "--strip-unneeded", *map(str, files), *map(str, (staging / "bin").iterdir())])
    info["files"] = {p.name: p.stat().st_size for p in files}
    (staging / "BUILD.json").write_text(json.dumps(info, indent=1))
    archive = dest / ARCHIVE
    with tarfile.open(archive, "w:gz", compresslevel=9) as tar:
        for path in sorted(staging.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(staging)), recursive=False)
    shutil.rmtree(staging)
    return archive


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="90", help="CUDA architecture to compile for (90: H100, H200)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel compile jobs")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir().parent / "cuda",
                        help="where the toolkit and built archives are kept")  # fmt: skip
    parser.add_argument("--work", type=Path, help="a build folder a failed run left (resumes it)")
    parser.add_argument(
        "--out", type=Path, help="also copy the archive here (e.g. .gpu/ for the device tool)"
    )
    args = parser.parse_args()
    slot = args.cache_dir / build_key(args.arch)
    archive = slot / ARCHIVE
    if not archive.exists():
        started = time.monotonic()
        toolkit = fetch_toolkit(args.cache_dir)
        slot.mkdir(parents=True, exist_ok=True)
        if args.work is not None:
            work = args.work
            source = work / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
        else:
            work = Path(tempfile.mkdtemp(prefix="llamafleet-llama-cuda-"))
            source = fetch_sources(work)
        try:
            compile_(source, work / "build", toolkit, args.arch, args.jobs, slot / "build.log")
        except SystemExit:
            say(f"the build folder stays for a retry: {sys.argv[0]} --work {work}")
            raise
        info: dict[str, object] = {
            "llama_cpp_python": VERSION, "toolkit": list(TOOLKIT), "arch": args.arch,
            "cmake": cmake_flags(args.arch, Path("<toolkit>")), "jobs": args.jobs,
            "build_s": round(time.monotonic() - started), "needs_at_run_time": list(RUNTIME_LIBS),
        }  # fmt: skip
        package(work / "build", slot, info)
        shutil.rmtree(work, ignore_errors=True)
        mib = archive.stat().st_size / 2**20
        say(f"built in {time.monotonic() - started:.0f}s: {archive} ({mib:.1f} MiB)")
    else:
        say(f"already built: {archive} ({archive.stat().st_size / 2**20:.1f} MiB)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(archive, args.out / ARCHIVE)
        say(f"copied to {args.out / ARCHIVE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

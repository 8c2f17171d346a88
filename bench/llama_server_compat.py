"""Compatibility run: llama.cpp's own server test suite against llamafleet, and against llama-server.

    .venv/bin/python bench/llama_server_compat.py [--files test_basic,test_tokenize] [--targets llamafleet]

The suite is ``tools/server/tests/unit`` from the llama-cpp-python sdist of the version the project
installs (downloaded once with pip into the cache, or ``--sdist FILE``). Each test starts its own
server through ``LLAMA_SERVER_BIN_PATH``; that is bench/llama_server_shim.py, which starts
``llamafleet up`` (gateway, control plane, one agent and an engine) or llama.cpp's own
llama-server (bench/build_llama_server.sh) on a local stand-in for the suite's Hugging Face
model, since this machine cannot reach the hub. Running llama-server on the same stand-ins
tells a test of the model's exact output (fails on both) from a gap of ours (passes only there).

Changed in the suite, nothing else: the conftest's model download (``ServerPreset.load_all``) is
skipped, and ``wget`` (used to fetch LoRA and media files) raises: those tests fail on both.

Writes WORKDIR/results-TARGET.json (every test's outcome, with the first line of each
failure) and WORKDIR/table.md (per file), and prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("LLAMAFLEET_CACHE", Path.home() / ".cache" / "llamafleet"))
TARGETS = ("llama-server", "llamafleet")
FILE_TIMEOUT_S = 1800
MODEL_NAME = re.compile(r"""(?:"model"\s*:\s*|model\s*=\s*)"([A-Za-z0-9._:/-]+)\"""")

WGET_STUB = '''"""Offline compat run: the suite's downloads (LoRA adapters, images) cannot be fetched here."""


def download(url, *args, **kwargs):
    raise RuntimeError(f"offline compatibility run: cannot download {url}")
'''


def llama_cpp_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("llama-cpp-python")


def sdist(path: Path | None, version: str) -> Path:
    if path is not None:
        return path
    target = CACHE / "sdist" / f"llama_cpp_python-{version}.tar.gz"
    if not target.is_file():
        print(f"downloading the llama-cpp-python {version} sdist from PyPI…", file=sys.stderr, flush=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", str(target.parent)],
            check=True,
        )  # fmt: skip
    return target


def extract_suite(archive: Path, version: str, workdir: Path) -> Path:
    """The suite's tests folder, fresh, with the two offline changes; returns its path. llama.cpp's
    models/templates come along at the same relative place (tests name ../../../models/templates/X.jinja)."""
    tree = workdir / "llama.cpp"
    suite = tree / "tools" / "server" / "tests"
    marker = tree / f".extracted-{version}"
    if marker.is_file():  # a run (perhaps still going) uses it
        return suite
    shutil.rmtree(tree, ignore_errors=True)
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    wanted = ("tools/server/tests/", "models/templates/")
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name[len(prefix) :] if member.name.startswith(prefix) else ""
            if member.isfile() and name.startswith(wanted):
                member.name = name
                tar.extract(member, tree, filter="data")
    conftest = suite / "conftest.py"
    text = conftest.read_text()
    skipped = text.replace("ServerPreset.load_all()", "pass  # offline: models are local stand-ins")
    if skipped == text:
        raise SystemExit("the suite's conftest no longer calls ServerPreset.load_all(): update this script")
    conftest.write_text(skipped)
    (suite / "wget.py").write_text(WGET_STUB)
    names = sorted({m for f in (suite / "unit").glob("test_*.py") for m in MODEL_NAME.findall(f.read_text())})
    (workdir / "suite-model-names.json").write_text(json.dumps(names))
    marker.write_text("")
    return suite


def wrapper(workdir: Path, target: str) -> Path:
    path = workdir / "bin" / f"llama-server-{target}"
    path.parent.mkdir(parents=True, exist_ok=True)
    shim = ROOT / "bench" / "llama_server_shim.py"
    path.write_text(
        f'#!/bin/sh\nexec {sys.executable} {shim} --target {target} --workdir {workdir} -- "$@"\n'
    )
    path.chmod(0o755)
    return path


def run_file(suite: Path, workdir: Path, target: str, test_file: str, port: int, binary: Path | None) -> dict:
    report = workdir / "junit" / target / f"{test_file}.xml"
    report.parent.mkdir(parents=True, exist_ok=True)
    log = workdir / "logs" / target / f"{test_file}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LLAMA_SERVER_BIN_PATH=str(wrapper(workdir, target)), PORT=str(port))
    if binary is not None:
        env["LLAMAFLEET_COMPAT_LLAMA_SERVER"] = str(binary)
    started = time.monotonic()
    with log.open("w") as out:
        try:
            subprocess.run(
                [sys.executable, "-m", "pytest", f"unit/{test_file}.py", "-p", "no:cacheprovider", "-q",
                 "-o", "addopts=", f"--junitxml={report}"],
                cwd=suite, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=FILE_TIMEOUT_S,
            )  # fmt: skip
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
    outcomes = parse_junit(report) if report.is_file() and not timed_out else {}
    return {"seconds": round(time.monotonic() - started, 1), "timed_out": timed_out, "tests": outcomes}


def parse_junit(report: Path) -> dict[str, dict[str, str]]:
    """test name → {"outcome": passed|failed|error|skipped, "message": first line of the reason}."""
    outcomes: dict[str, dict[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "failed" if tag == "failure" else tag
                message = (node.get("message") or node.text or "").strip().splitlines()[0][:300] if (
                    node.get("message") or node.text) else ""  # fmt: skip
                break
        outcomes[case.get("name", "?")] = {"outcome": outcome, "message": message}
    return outcomes


def table(results: dict[str, dict[str, dict]], files: list[str]) -> tuple[str, dict[str, int]]:
    """Markdown rows per file, and the totals."""
    rows = [
        "| File | Tests | llama-server passes | llamafleet passes | Both pass | Only llama-server | "
        "Only llamafleet | Both fail |",
        "|---|---|---|---|---|---|---|---|",
    ]
    totals = dict.fromkeys(
        ("tests", "llama_server", "llamafleet", "both", "only_ls", "only_lf", "neither"), 0
    )
    for f in files:
        ls = results.get("llama-server", {}).get(f, {}).get("tests", {})
        lf = results.get("llamafleet", {}).get(f, {}).get("tests", {})
        names = sorted(set(ls) | set(lf))

        def ok(side: dict, n: str) -> bool:
            return bool(side.get(n, {}).get("outcome") == "passed")

        counts = {
            "tests": len(names),
            "llama_server": sum(ok(ls, n) for n in names),
            "llamafleet": sum(ok(lf, n) for n in names),
            "both": sum(ok(ls, n) and ok(lf, n) for n in names),
            "only_ls": sum(ok(ls, n) and not ok(lf, n) for n in names),
            "only_lf": sum(ok(lf, n) and not ok(ls, n) for n in names),
            "neither": sum(not ok(ls, n) and not ok(lf, n) for n in names),
        }
        for k, v in counts.items():
            totals[k] += v
        rows.append(f"| {f} | " + " | ".join(str(counts[k]) for k in totals) + " |")
    rows.append("| **all** | " + " | ".join(f"**{totals[k]}**" for k in totals) + " |")
    return "\n".join(rows), totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="llama-cpp-python sdist (default: downloaded and cached)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/llamafleet-compat"))
    parser.add_argument("--files", default="", help="comma-separated test files (default: all of unit/)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="llama-server, llamafleet or both")
    parser.add_argument("--port", type=int, default=18080, help="port the servers under test listen on")
    parser.add_argument("--jobs", type=int, default=1, help="test files run at once (each on its own port)")
    opts = parser.parse_args()

    version = llama_cpp_version()
    workdir = opts.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    suite = extract_suite(sdist(opts.sdist, version), version, workdir)
    files = (
        opts.files.split(",") if opts.files else sorted(p.stem for p in (suite / "unit").glob("test_*.py"))
    )
    targets = [t for t in opts.targets.split(",") if t]
    binary = CACHE / "llama-server" / version / "llama-server"
    if "llama-server" in targets and not binary.is_file():
        raise SystemExit(f"no llama-server at {binary}: run bench/build_llama_server.sh first")

    def results_path(target: str) -> Path:  # one file per target: the two may run at once
        return workdir / f"results-{target}.json"

    def load(target: str) -> dict[str, dict]:
        path = results_path(target)
        return dict(json.loads(path.read_text())) if path.is_file() else {}

    results = {target: load(target) for target in TARGETS}
    ports: queue.Queue[int] = queue.Queue()
    for k in range(opts.jobs):  # each file at a time owns one port (its servers listen there)
        ports.put(opts.port + 10 * k)
    lock = threading.Lock()

    def one(target: str, f: str) -> None:
        port = ports.get()
        try:
            done = run_file(suite, workdir, target, f, port, binary)
        finally:
            ports.put(port)
        passed = sum(t["outcome"] == "passed" for t in done["tests"].values())
        with lock:
            results.setdefault(target, {})[f] = done
            line = f"{target}: {f}: {passed}/{len(done['tests'])} passed in {done['seconds']} s"
            print(line, file=sys.stderr, flush=True)
            results_path(target).write_text(json.dumps(results[target], indent=1, sort_keys=True))

    with ThreadPoolExecutor(opts.jobs) as pool:
        for future in [pool.submit(one, target, f) for target in targets for f in files]:
            future.result()

    every_file = sorted(set().union(*(r.keys() for r in results.values())))
    markdown, totals = table(results, every_file)
    (workdir / "table.md").write_text(markdown + "\n")
    print(markdown)
    print(json.dumps({"bench": "llama_server_compat", "llama_cpp_python": version, **totals,
                      "results": [str(results_path(t)) for t in TARGETS]}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

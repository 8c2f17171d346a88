"""Benchmark: the node cache's downloads, and memory-mapped weights shared by replicas.

    .venv/bin/python bench/download.py [--size-gib 1] [--throughput-only]

1. Throughput: a sparse file of --size-gib served over loopback by a real HTTP server
   (tests/support/file_server.py), fetched by the node cache (HTTP, sha256 while it arrives,
   rename into the cache) against a plain copy of the same file (shutil.copyfile: over a sparse
   file, copy_file_range moves no data) and against a copy that reads, hashes (sha256, the check a
   download must make) and writes every byte, best of 3 each. Target: ≥ 0.8× the copy's rate.
   Also sha256 alone over as many bytes from memory: the ceiling of any checked download here.
2. Resume: a download whose first half is already there (as a cut attempt leaves it): the time
   to finish it (the first half is hashed again from disk while the second arrives) over half an
   uncut download's.
3. Time to first token for a model not yet on the node: `llamafleet up` serving SmolLM2 from its
   builtin file, then the models file gains a model whose source is an http URL of the same GGUF
   (fetched, checked, loaded) — against adding one more builtin model (loaded only). Time from the
   file's change to the first completion through the gateway. The same with `kubectl apply` of a
   Model: a control plane on the Kubernetes API emulator (tests/support/kubeapi), one agent, a
   gateway; time from the apply to the first completion.
4. Shared pages: two replicas of the URL model on the node; the file-backed PSS
   (/proc/PID/smaps_rollup Pss_File, the weights' pages) of both engines together over one
   replica's alone. Target: ≤ 1.2× (the kernel counts the shared pages once).
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent.cache.http_fetch import fetch
from nodeagent.cache.resolver import builtin_path
from nodeagent.cache.store import ModelStore
from nodeagent.supervisor.process import free_port
from tests.support import oneshot
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.file_server import file_server
from tests.support.kubeapi import CRD_FILE, kube_api
from tests.support.processes import (
    REPO,
    Proc,
    agent_args,
    engine_pids,
    gateway_args,
    grpc_port,
    kube_controlplane_args,
)
from tests.support.wait import wait_until

GiB = 1 << 30
COMMON = "    contextLength: 512\n    parallelSlots: 1\n    threads: 1\n"


def best_of(runs: int, once: object) -> float:
    times = []
    for _ in range(runs):
        times.append(once())  # type: ignore[operator]
    return min(times)


def throughput(tmp: Path, size: int) -> dict[str, float]:
    sparse = tmp / "sparse.gguf"
    with sparse.open("wb") as f:
        f.truncate(size)
    port = free_port("127.0.0.1")
    serve = [sys.executable, "-m", "tests.support.file_server", str(port), f"sparse.gguf={sparse}"]
    server = subprocess.Popen(serve, cwd=REPO)
    url = f"http://127.0.0.1:{port}/files/sparse.gguf"
    wait_until(lambda: ready(url), 30, "the file server")
    try:

        def download() -> float:
            cache = tmp / f"cache-{time.monotonic_ns()}"
            started = time.perf_counter()
            asyncio.run(ModelStore(cache).fetch(url))
            elapsed = time.perf_counter() - started
            shutil.rmtree(cache)
            return elapsed

        def cut_download() -> float:
            """The same download cut at half by a proxy-free trick: a first attempt that stops reading."""
            cache = tmp / f"cache-{time.monotonic_ns()}"
            part = cache / "partial" / "resume.gguf"
            part.parent.mkdir(parents=True)
            with sparse.open("rb") as src, part.open("wb") as dst:  # what the cut attempt had written
                dst.write(src.read(size // 2))
            started = time.perf_counter()
            asyncio.run(_resume(url, part))
            elapsed = time.perf_counter() - started
            shutil.rmtree(cache)
            return elapsed

        def copy() -> float:
            target = tmp / "copy.gguf"
            started = time.perf_counter()
            shutil.copyfile(sparse, target)
            elapsed = time.perf_counter() - started
            target.unlink()
            return elapsed

        def copy_and_hash() -> float:
            """The same bytes copied with the check a download must make (sha256), in one pass."""
            target = tmp / "copy.gguf"
            started = time.perf_counter()
            digest = hashlib.sha256()
            with sparse.open("rb") as src, target.open("wb") as dst:
                while block := src.read(4 << 20):
                    digest.update(block)
                    dst.write(block)
            elapsed = time.perf_counter() - started
            target.unlink()
            return elapsed

        def hash_only() -> float:
            """sha256 alone over the same number of bytes from memory: the ceiling of any download
            that checks what it gets (one digest is one sequential pass, on one core)."""
            block, digest = bytes(4 << 20), hashlib.sha256()
            started = time.perf_counter()
            for _ in range(size // len(block)):
                digest.update(block)
            return time.perf_counter() - started

        plain = best_of(3, copy)
        hashed = best_of(3, hash_only)
        checked = best_of(3, copy_and_hash)
        fetched = best_of(3, download)
        resumed = best_of(3, cut_download)
    finally:
        server.terminate()
        server.wait(30)
    return {
        "copy_mib_s": round(size / plain / (1 << 20), 1),
        "download_mib_s": round(size / fetched / (1 << 20), 1),
        "ratio_download_to_copy": round(plain / fetched, 3),
        "sha256_only_mib_s": round(size / hashed / (1 << 20), 1),
        "ratio_download_to_sha256_only": round(hashed / fetched, 3),
        "copy_and_sha256_mib_s": round(size / checked / (1 << 20), 1),
        "ratio_download_to_copy_and_sha256": round(checked / fetched, 3),
        "resume_second_half_s": round(resumed, 3),
        "resume_overhead_ratio": round(resumed / (fetched / 2), 3),
    }


async def _resume(url: str, part: Path) -> None:
    """Finish ``part`` from where it stops (hashing its first half again, as a resumed download does)."""
    await fetch(url, part)


def ready(url: str, plain: bool = False) -> bool:
    try:
        if plain:
            return oneshot.get(url, timeout=2).status_code == 200
        return oneshot.get(url, headers={"Range": "bytes=0-0"}, timeout=2).status_code == 206
    except httpx.HTTPError:
        return False


def first_token(
    cluster: Cluster, models: Path, base_yaml: str, name: str, source: str, extra: str = ""
) -> float:
    models.write_text(base_yaml + f"  - name: {name}\n    source: {source}\n{extra}{COMMON}")
    started = time.monotonic()
    body = {"model": name, "prompt": "Hello", "max_tokens": 1}

    def answered() -> bool:
        try:
            return (
                oneshot.post(f"{cluster.base_url}/v1/completions", json=body, timeout=30).status_code == 200
            )
        except httpx.HTTPError:
            return False

    wait_until(answered, 300, f"{name} to answer", interval=0.1)
    return time.monotonic() - started


def first_token_kubectl(tmp: Path, url: str) -> tuple[float, float]:
    """Seconds from `kubectl apply` of a Model to its first completion: (a builtin one, one from ``url``)."""
    with kube_api(tmp, free_port("127.0.0.1"), crds=()) as api:
        api.kubectl("apply", "-f", str(CRD_FILE))
        port, http_port, gw_port = grpc_port(), free_port("127.0.0.1"), free_port("127.0.0.1")
        address = f"127.0.0.1:{port}"
        procs = [
            Proc("controlplane", kube_controlplane_args(api.kubeconfig, port, http_port, "cp-0", tmp),
                 tmp / "cp.log"),
            Proc("agent", agent_args(tmp, address), tmp / "agent.log"),
            Proc("gateway", gateway_args(address, gw_port, tmp), tmp / "gw.log"),
        ]  # fmt: skip
        for proc in procs:
            proc.start()
        base = f"http://127.0.0.1:{gw_port}"
        try:
            wait_until(
                lambda: ready(f"http://127.0.0.1:{http_port}/readyz", plain=True), 60, "the control plane"
            )
            times = []
            for name, source in (("kube-builtin", "builtin:smollm2-135m"), ("kube-url", url)):
                manifest = tmp / f"{name}.yaml"
                manifest.write_text(
                    f"apiVersion: llamafleet.io/v1alpha1\nkind: Model\nmetadata:\n  name: {name}\nspec:\n"
                    f"  source: {source}\n  contextLength: 512\n  parallelSlots: 1\n"
                )
                started = time.monotonic()
                api.kubectl("apply", "-f", str(manifest))
                body = {"model": name, "prompt": "Hello", "max_tokens": 1}

                def answered(body: dict[str, object] = body) -> bool:
                    try:
                        return (
                            oneshot.post(f"{base}/v1/completions", json=body, timeout=30).status_code == 200
                        )
                    except httpx.HTTPError:
                        return False

                wait_until(answered, 300, f"{name} to answer", interval=0.1)
                times.append(time.monotonic() - started)
            return times[0], times[1]
        finally:
            for proc in reversed(procs):
                proc.stop()


def pss_file(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss_File:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no Pss_File in smaps_rollup (kernel too old)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gib", type=float, default=1.0, help="size of the sparse file (default 1)")
    parser.add_argument("--throughput-only", action="store_true",
                        help="only the download, resume and copy figures (no cluster)")  # fmt: skip
    args = parser.parse_args()
    smol = builtin_path("smollm2-135m")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        result: dict[str, object] = {"bench": "download", "size_bytes": int(args.size_gib * GiB)}
        result |= throughput(tmp, int(args.size_gib * GiB))
        if args.throughput_only:
            print(json.dumps(result))
            return
        base = f"models:\n  - name: smollm2-135m\n    source: builtin:smollm2-135m\n{COMMON}"
        with file_server() as server:
            url = server.add("smol.gguf", smol)
            (tmp / "cluster").mkdir()
            cluster = start_cluster(tmp / "cluster", base, ["smollm2-135m"])
            models = tmp / "cluster" / "models.yaml"
            try:
                builtin_s = first_token(cluster, models, base, "again", "builtin:smollm2-135m")
                base += f"  - name: again\n    source: builtin:smollm2-135m\n{COMMON}"
                url_s = first_token(cluster, models, base, "fresh", url)
                one = [pid for label, pid in engine_pids(cluster).items() if label.startswith("fresh#")]
                alone = pss_file(one[0])
                models.write_text(base + f"  - name: fresh\n    source: {url}\n    replicas: 2\n{COMMON}")
                wait_until(lambda: len([k for k in engine_pids(cluster) if k.startswith("fresh#")]) == 2, 120,
                           "a second replica")  # fmt: skip
                time.sleep(2)
                two = [pid for label, pid in engine_pids(cluster).items() if label.startswith("fresh#")]
                both = sum(pss_file(pid) for pid in two)
            finally:
                stop_cluster(cluster)
            (tmp / "kube").mkdir()
            kube_builtin_s, kube_url_s = first_token_kubectl(tmp / "kube", server.add("kube.gguf", smol))
        result |= {
            "kubectl_first_token_builtin_s": round(kube_builtin_s, 2),
            "kubectl_first_token_url_s": round(kube_url_s, 2),
            "first_token_builtin_s": round(builtin_s, 2),
            "first_token_url_s": round(url_s, 2),
            "download_share_of_first_token": round((url_s - builtin_s) / url_s, 3),
            "pss_file_one_replica_mib": round(alone / (1 << 20), 1),
            "pss_file_two_replicas_mib": round(both / (1 << 20), 1),
            "ratio_two_to_one": round(both / alone, 3),
            "targets": {"ratio_download_to_copy": ">= 0.8", "ratio_two_to_one": "<= 1.2"},
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

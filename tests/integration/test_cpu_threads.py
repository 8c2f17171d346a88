"""CPU threads are the cluster's decision (issue 26): an engine the agent starts for a Model without
``threads`` computes with the node's usable CPUs, two replicas on the node share them (the running
engine moves without a restart), a cgroup CPU quota lowers the count, and a Model asking for more
threads than the node has is refused at placement with the reason. Each count is read from the
engine process itself: its ``--n-threads`` argument and llama.cpp's own count (``/health``)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from llamafleet.core.threads import ThreadWant, share_threads
from nodeagent.hardware.cpus import affinity, detect
from tests.support import oneshot
from tests.support.child_env import machine_threads
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.engine import running_engine
from tests.support.processes import admin_cli
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _machine_threads() -> Iterator[None]:
    """These tests are about the agent's own share of the CPUs: never the parallel workers' one thread."""
    with machine_threads():
        yield


MODEL = """
models:
  - name: smol
    source: builtin:smollm2-135m
    contextLength: 512
    parallelSlots: 1
    replicas: {replicas}
  - name: greedy
    source: builtin:smollm2-135m
    contextLength: 512
    parallelSlots: 1
    threads: 512
"""


def engines(cluster: Cluster) -> dict[int, tuple[int, str]]:
    """Every engine the cluster's agent runs for "smol": pid → (its --n-threads, its local URL)."""
    found = {}
    for child in psutil.Process(cluster.process.pid).children(recursive=True):
        try:
            argv = child.cmdline()
        except psutil.Error:
            continue
        if "nodeagent.engine" in argv and argv[argv.index("--model-name") + 1] == "smol":
            arg = dict(itertools.pairwise(argv))
            found[child.pid] = (int(arg["--n-threads"]), f"http://{arg['--host']}:{arg['--port']}")
    return found


def llama_threads(url: str) -> int:
    """llama.cpp's thread count in that engine (llama_n_threads of its context), 0 while it loads."""
    try:
        health = oneshot.get(f"{url}/health", timeout=5)
    except httpx.HTTPError:
        return 0
    return int(health.json().get("threads", 0)) if health.status_code == 200 else 0


def models_json(cluster: Cluster) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "llamafleet.cli.main", "models", "--json", "--controlplane", cluster.grpc,
         *admin_cli(cluster.tmp)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return {m["name"]: m for m in json.loads(out.stdout)}


@pytest.fixture
def cpu_quota_cgroup() -> Iterator[Path]:
    """A cgroup limited to one CPU (v1 cpu controller, else v2), removed afterwards."""
    name = f"llamafleet-test-{uuid.uuid4().hex[:8]}"
    v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
    if (v1 / "cpu.cfs_quota_us").exists():
        folder = v1 / name
        write = {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"}
    elif (v2 / "cgroup.controllers").exists() and "cpu" in (v2 / "cgroup.subtree_control").read_text():
        folder = v2 / name
        write = {"cpu.max": "100000 100000"}
    else:
        pytest.skip("no cgroup cpu controller to limit (needs root and cgroup v1 cpu or v2 with cpu enabled)")
    try:
        folder.mkdir()
        for file, value in write.items():
            (folder / file).write_text(value)
    except OSError as exc:
        pytest.skip(f"cannot make a CPU-limited cgroup here: {exc}")
    yield folder
    for pid in (folder / "cgroup.procs").read_text().split():  # what the test left (it stops the cluster)
        psutil.Process(int(pid)).kill()
    wait_until(lambda: not (folder / "cgroup.procs").read_text().strip(), 30, "the cgroup to empty")
    folder.rmdir()


def test_engines_get_the_nodes_cpus_shared_and_more_than_a_node_has_is_refused(tmp_path: Path) -> None:
    usable = detect().usable
    cluster = start_cluster(tmp_path, MODEL.format(replicas=1), ["smol"])
    try:
        ((first, (argv_threads, url)),) = engines(cluster).items()
        assert argv_threads == usable  # never 0: llama.cpp's default of 4 would ignore this machine
        assert llama_threads(url) == usable

        greedy = models_json(cluster)["greedy"]
        placed = next(c for c in greedy["conditions"] if c["type"] == "Placed")  # type: ignore[attr-defined]
        assert placed["status"] == "False"
        assert f"threads 512 is more than its {usable} usable CPUs" in placed["message"]

        if usable < 2:
            return  # a second replica would find the node's one CPU held: not placed (unit tests cover it)
        (tmp_path / "models.yaml").write_text(MODEL.format(replicas=2))
        shares = sorted(share_threads(usable, [ThreadWant(), ThreadWant()]))

        def shared() -> bool:
            running = engines(cluster)
            return len(running) == 2 and sorted(llama_threads(u) for _, u in running.values()) == shares

        wait_until(shared, 120, f"two engines with {shares} threads", on_timeout=cluster.log)
        assert first in engines(cluster)  # the first engine moved to its share without a restart

        def reported() -> bool:  # the agent reads the engines' counts at its next health check
            replicas = models_json(cluster)["smol"]["replicas"]
            return sorted(r["threads"] for r in replicas) == shares  # type: ignore[attr-defined]

        wait_until(reported, 30, f"the model's status to show {shares} threads")
        nodes = subprocess.run(
            [sys.executable, "-m", "llamafleet.cli.main", "nodes", "--controlplane", cluster.grpc,
             *admin_cli(cluster.tmp)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert "THREADS/CPUS" in nodes
        assert f" {sum(shares)}/{detect().describe()} " in nodes  # threads in use / the node's usable CPUs
    finally:
        stop_cluster(cluster)


def test_a_cgroup_cpu_quota_lowers_the_threads(tmp_path: Path, cpu_quota_cgroup: Path) -> None:
    procs = cpu_quota_cgroup / "cgroup.procs"
    cluster = start_cluster(
        tmp_path, MODEL.format(replicas=1), ["smol"], preexec=lambda: procs.write_text(str(os.getpid()))
    )
    try:
        ((argv_threads, url),) = engines(cluster).values()
        assert argv_threads == 1
        assert llama_threads(url) == 1
        if detect().physical > 1:  # the agent says where its count comes from
            assert "usable CPUs 1 (cgroup quota 1 CPUs of" in cluster.log()
    finally:
        stop_cluster(cluster)


def test_an_engine_started_by_hand_takes_its_own_cpus_and_moves_threads_on_request(
    tmp_path: Path, smollm2_path: Path
) -> None:
    usable, allowed = detect().usable, len(affinity())
    with running_engine(smollm2_path, tmp_path, "--parallel-slots", "1", "--context-length", "256") as engine:
        assert llama_threads(engine.url) == usable  # --n-threads 0: this process's CPUs, not llama.cpp's 4
        moved = oneshot.put(f"{engine.url}/threads", json={"threads": 1}, timeout=30)
        assert moved.json() == {"threads": 1}
        assert llama_threads(engine.url) == 1
        answer = oneshot.post(
            f"{engine.url}/v1/completions", json={"prompt": "Hi", "max_tokens": 4}, timeout=60
        )
        assert answer.status_code == 200  # it still generates with its new count
        too_many = oneshot.put(f"{engine.url}/threads", json={"threads": allowed + 1}, timeout=30)
        assert too_many.status_code == 400
        assert too_many.json()["error"]["message"] == (
            f"threads {allowed + 1} is more than the {allowed} CPUs this engine may run on"
        )
        assert oneshot.put(f"{engine.url}/threads", json={"threads": 0}, timeout=30).status_code == 400
        assert llama_threads(engine.url) == 1  # refused requests change nothing

"""Models from URLs and Hugging Face, served by a real cluster (control plane, one agent, gateway):
one download per file on the node (two replicas of one model and a second model naming the same
file through the hub), a cut download resumed, a model split in three shards, a wrong sha256
refused with nothing loaded."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.domain import ModelStatusView
from llamafleet.core.errors import Unavailable
from nodeagent.cache.store import ModelStore
from tests.support import oneshot
from tests.support.file_server import Fault, FileServer, file_server
from tests.support.ports import server_port
from tests.support.processes import (
    Proc,
    admin_client,
    agent_args,
    controlplane_args,
    engine_pids,
    gateway_args,
    grpc_port,
    wait_ready,
)
from tests.support.split_gguf import write_split
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@dataclass
class Sourced:
    tmp: Path
    address: str
    base: str
    server: FileServer
    agent: Proc
    size: int

    def models(self) -> dict[str, ModelStatusView]:
        async def fetch() -> list[ModelStatusView]:
            client = admin_client(self.address, self.tmp)
            try:
                return await client.list_models()
            finally:
                await client.close()

        return {m.name: m for m in asyncio.run(fetch())}


def answers(sourced: Sourced) -> bool:
    """Whether the control plane serves its API yet (a busy machine starts it after the gateway)."""
    try:
        sourced.models()
    except Unavailable:
        return False
    return True


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sourced(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Iterator[Sourced]:
    tmp = tmp_path_factory.mktemp("sources")
    digest = hashlib.sha256(smollm2_path.read_bytes()).hexdigest()
    with file_server() as server:
        url = server.add("smol.gguf", smollm2_path)
        # Other bytes than smol.gguf (a declared sha256 would let one download serve both).
        ahead_file = tmp / "ahead.gguf"
        ahead_file.write_bytes(smollm2_path.read_bytes() + b"\0" * 64)
        ahead = server.add("ahead.gguf", ahead_file)
        server.add_repo("org/smol-gguf", {"SmolLM2-135M-Instruct-Q4_1.gguf": smollm2_path})
        (tmp / "shards").mkdir()
        shards = write_split(smollm2_path, tmp / "shards" / "smol-Q4_1", 3)
        server.add_repo("org/smol-split", {p.name: p for p in shards})
        server.faults["smol.gguf"].append(Fault(drop_after=20 << 20))  # the first answer is cut at 20 MiB
        common = "    contextLength: 512\n    parallelSlots: 1\n    threads: 1\n    shareCpus: true\n"
        (tmp / "models.yaml").write_text(
            f"models:\n  - name: web\n    source: {url}\n    sha256: {digest}\n    replicas: 2\n{common}"
            f"  - name: hub\n    source: hf://org/smol-gguf:Q4_1\n{common}"
            f"  - name: split\n    source: hf://org/smol-split:Q4_1\n{common}"
            f"  - name: bad\n    source: {url}\n    sha256: '{'0' * 64}'\n{common}"
            f"  - name: ahead\n    source: {ahead}\n    sha256: {sha256_of(ahead_file)}\n"
            f"    replicas: 0\n    prefetch: true\n{common}"
        )
        port, gw_port = grpc_port(), server_port()
        address = f"127.0.0.1:{port}"
        cp_args = controlplane_args(
            tmp, port, "--models", str(tmp / "models.yaml"), "--status-interval-s", "1"
        )
        procs = [Proc("controlplane", cp_args, tmp / "cp.log").start()]
        # The agent finds the hub where HF_ENDPOINT says, as a mirror or an air-gapped hub is found.
        agent = Proc("node-a", [*agent_args(tmp, address, "node-a"), "--allocatable-memory", "6GiB"],
                     tmp / "node-a.log", env={"HF_ENDPOINT": server.url}).start()  # fmt: skip
        procs.append(agent)
        procs.append(Proc("gateway", gateway_args(address, gw_port, tmp), tmp / "gw.log").start())
        running = Sourced(
            tmp, address, f"http://127.0.0.1:{gw_port}", server, agent, smollm2_path.stat().st_size
        )
        try:
            wait_ready(procs[-1], f"{running.base}/healthz")  # the gateway answers before the control plane
            wait_until(lambda: answers(running), 60, "the control plane to answer", on_timeout=procs[0].log)
            yield running
        finally:
            for proc in reversed(procs):
                proc.stop()


def test_url_and_hub_models_serve_from_one_download_resumed_after_a_cut(sourced: Sourced) -> None:
    def ready() -> bool:
        models = sourced.models()
        return models["web"].ready_replicas == 2 and models["hub"].ready_replicas == 1

    wait_until(ready, 180, "web (2 replicas, from a URL) and hub (from hf://) to serve",
               on_timeout=lambda: sourced.agent.log()[-3000:])  # fmt: skip
    for model in ("web", "hub"):
        body = {"model": model, "prompt": "Hello", "max_tokens": 2}
        assert oneshot.post(f"{sourced.base}/v1/completions", json=body, timeout=60).status_code == 200
    served = sourced.server.sent["smol.gguf"] + sum(
        n for name, n in sourced.server.sent.items() if name.startswith("org--smol-gguf")
    )
    assert served == sourced.size  # one download for three replicas and two sources, despite the cut
    assert sourced.server.requests["smol.gguf"] == 2  # the cut answer, then the rest from byte 20 MiB
    assert "resuming at byte 20971520" in sourced.agent.log()
    assert len([name for name in engine_pids(sourced.agent) if name.startswith(("web#", "hub#"))]) == 3


def test_a_model_split_in_three_shards_loads_and_serves(sourced: Sourced) -> None:
    wait_until(lambda: sourced.models()["split"].ready_replicas == 1, 180, "the split model to serve")
    body = {"model": "split", "prompt": "Hello", "max_tokens": 2}
    assert oneshot.post(f"{sourced.base}/v1/completions", json=body, timeout=60).status_code == 200
    assert sum(n for name, n in sourced.server.sent.items() if name.startswith("org--smol-split")) == sum(
        p.stat().st_size for p in (sourced.tmp / "shards").iterdir()
    )


def test_a_prefetched_model_is_on_the_node_before_any_replica(sourced: Sourced) -> None:
    cache = ModelStore(sourced.tmp / "node-a" / "models")  # the agent's cache, read from its index
    ahead = f"{sourced.server.url}/files/ahead.gguf"
    wait_until(lambda: ModelStore(cache.root).cached(ahead) is not None, 120, "the prefetch")
    assert sourced.server.sent["ahead.gguf"] == sourced.size + 64
    assert not [name for name in engine_pids(sourced.agent) if name.startswith("ahead#")]
    assert "prefetched " in sourced.agent.log()


def test_a_wrong_sha256_is_refused_and_nothing_loads(sourced: Sourced) -> None:
    def refused() -> bool:
        bad = sourced.models()["bad"]
        return any(c.type == "ModelValid" and c.reason == "ChecksumMismatch" for c in bad.conditions)

    wait_until(refused, 120, "bad to be refused for its checksum")
    bad = sourced.models()["bad"]
    assert bad.ready_replicas == 0
    assert not [pid for name, pid in engine_pids(sourced.agent).items() if name.startswith("bad#")]
    condition = next(c for c in bad.conditions if c.type == "ModelValid")
    assert f"is not the expected {'0' * 64}" in condition.message


def test_a_full_disk_is_a_condition_on_that_model_and_nothing_else(
    tmp_path: Path, smollm2_path: Path
) -> None:
    cache = tmp_path / "tiny-cache"
    cache.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(cache)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        with file_server() as server:
            url = server.add("smol.gguf", smollm2_path)
            common = "    contextLength: 512\n    parallelSlots: 1\n    threads: 1\n    shareCpus: true\n"
            (tmp_path / "models.yaml").write_text(
                f"models:\n  - name: big\n    source: {url}\n    sha256: {sha256_of(smollm2_path)}\n{common}"
                f"  - name: local\n    source: builtin:smollm2-135m\n{common}"
            )
            port = grpc_port()
            address = f"127.0.0.1:{port}"
            models = str(tmp_path / "models.yaml")
            cp_args = controlplane_args(tmp_path, port, "--models", models, "--status-interval-s", "1")
            cp = Proc("controlplane", cp_args, tmp_path / "cp.log").start()
            agent_flags = [*agent_args(tmp_path, address, "node-a"), "--supervisor-cache-dir", str(cache)]
            agent = Proc("node-a", agent_flags, tmp_path / "node-a.log").start()
            running = Sourced(tmp_path, address, "", server, agent, smollm2_path.stat().st_size)
            try:

                def settled() -> bool:
                    try:
                        models = running.models()
                    except Unavailable:  # the control plane is still starting
                        return False
                    if "big" not in models:
                        return False
                    big = next((c for c in models["big"].conditions if c.type == "ModelValid"), None)
                    local_ready = models["local"].ready_replicas == 1
                    return big is not None and big.reason == "DiskFull" and local_ready

                wait_until(settled, 120, "big to fail for the disk, local to serve", on_timeout=agent.log)
                assert agent.alive()
                condition = next(c for c in running.models()["big"].conditions if c.type == "ModelValid")
                assert "no space left on this node" in condition.message
            finally:
                agent.stop()
                cp.stop()
    finally:
        subprocess.run(["umount", str(cache)], check=False)

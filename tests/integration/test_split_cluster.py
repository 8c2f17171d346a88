"""A model too big for any one node, served across several: real agents on separate network stacks.

The control plane and the gateway run in the root namespace; every agent runs in its own network
namespace with its own address on a bridge (tests/support/netns.py), its allocatable memory set so
the model fits on none alone. The control plane executes the split plan: RPC workers behind
mutual-TLS gates, then the head engine pointed at them. Greedy completions through the gateway
equal the unsplit model's, token for token. Then the faults: a worker killed mid-stream, a worker
stopped, a host's link cut; each time the client gets an error within a bounded time, the replica
goes not-ready, and the model serves again after the split is placed again.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from controlplane.domain import ReplicaPhase, ReplicaRecord
from tests.support import netns, oneshot
from tests.support.engine import running_engine
from tests.support.netns_cluster import DECODE_TIMEOUT_S, NetnsCluster, netns_cluster
from tests.support.rpc import PROMPTS, greedy
from tests.support.synthetic_gguf import gemma3_path
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(netns.available()), reason=netns.available())]


def serving_split(cluster: NetnsCluster, model: str) -> ReplicaRecord | None:
    replica = cluster.replica(model)
    ready = replica is not None and replica.phase == ReplicaPhase.READY and replica.parts
    return replica if ready and all(p.phase == ReplicaPhase.READY for p in replica.parts) else None  # type: ignore[union-attr]


def expected_tokens(tmp: Path, source: Path, model: str, prompts: list[str] = PROMPTS) -> list[str]:
    flags = ("--n-threads", "1", "--context-length", "512", "--parallel-slots", "1")  # as the split runs
    with running_engine(source, tmp, *flags, name=model) as whole:
        return [greedy(whole.url, prompt, model) for prompt in prompts]


def wait_serving(cluster: NetnsCluster, model: str, timeout: float = 120) -> ReplicaRecord:
    found: list[ReplicaRecord] = []

    def check() -> bool:
        replica = serving_split(cluster, model)
        if replica is not None:
            found[:] = [replica]
        return replica is not None

    wait_until(check, timeout, f"{model} to serve as a split", on_timeout=cluster.logs)
    return found[0]


def test_a_model_too_big_for_any_node_is_served_split_and_token_for_token_equal(
    tmp_path: Path, smollm2_path: Path
) -> None:
    expected = expected_tokens(tmp_path, smollm2_path, "smollm2")
    with netns_cluster(
        tmp_path, "smollm2", smollm2_path, ["node-a", "node-b", "node-c"], "180MiB"
    ) as cluster:
        replica = wait_serving(cluster, "smollm2")
        nodes = {replica.node_id, *(p.node_id for p in replica.parts)}
        assert len(nodes) >= 2  # it fits on none alone
        ranges = [(p.first_layer, p.last_layer) for p in replica.parts] + [replica.head_layers]
        assert ranges[0][0] == 0
        assert ranges[-1][1] == 29
        assert [greedy(cluster.gateway_url, prompt) for prompt in PROMPTS] == expected


@pytest.mark.skipif(gemma3_path() is None, reason="gemma3-270m (a dev dependency) is not installed")
def test_sliding_window_layers_split_token_for_token_equal(tmp_path: Path) -> None:
    source = gemma3_path()
    assert source is not None
    # Not PROMPTS[2]: its greedy path is a near-tie that flips with the summation order. llama.cpp
    # repacks Q4_K weights for AVX2 kernels on the head's CPU but never on an RPC worker, and that
    # alone changes it: on the whole model, repacking on or off gives two different stories. With
    # repacking off on both sides the split equals the whole model on all three prompts
    # (test_rpc_split.py); SmolLM2 (Q4_1, never repacked) matches here on every prompt.
    prompts = PROMPTS[:2]
    expected = expected_tokens(tmp_path, source, "gemma3", prompts)
    with netns_cluster(tmp_path, "gemma3", source, ["node-a", "node-b"], "720MiB") as cluster:
        replica = wait_serving(cluster, "gemma3", timeout=180)
        assert len(replica.parts) == 1
        assert [greedy(cluster.gateway_url, prompt, "gemma3") for prompt in prompts] == expected


def stream_until_broken(cluster: NetnsCluster, fault: Callable[[], None]) -> tuple[float, str]:
    """Stream a long completion; after a few tokens apply ``fault``. Returns (seconds from the fault
    to the stream's end, how it ended)."""
    body = {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 4000, "temperature": 0,
            "ignore_eos": True, "stream": True}  # fmt: skip
    faulted = threading.Event()
    fault_at = [0.0]
    ended = "completed"
    with oneshot.stream("POST", f"{cluster.gateway_url}/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200, response.read()
        chunks = 0
        try:
            for line in response.iter_lines():
                if line.startswith("data: {") and '"error"' in line:
                    ended = "error event"
                    break
                chunks += line.startswith("data: ")
                if chunks == 5 and not faulted.is_set():
                    faulted.set()
                    fault_at[0] = time.monotonic()
                    fault()
                if line == "data: [DONE]":
                    ended = "done"
        except httpx.HTTPError as exc:
            ended = f"connection: {type(exc).__name__}"
    assert faulted.is_set(), "the stream ended before the fault"
    return time.monotonic() - fault_at[0], ended


def check_recovery(cluster: NetnsCluster, fault: Callable[[], None], bound_s: float) -> None:
    wait_serving(cluster, "smollm2")
    before = cluster.replica("smollm2")
    assert before is not None
    took, ended = stream_until_broken(cluster, fault)
    print(f"fault {fault.__name__}: stream ended {took:.1f}s later ({ended})")
    assert took < bound_s, f"the stream took {took:.1f}s to end after the fault ({ended})"
    assert ended != "done", "a stream through a broken split must not claim to be complete"
    wait_until(lambda: serving_split(cluster, "smollm2") is None, 30, "the replica to go not-ready",
               on_timeout=cluster.logs)  # fmt: skip
    after = wait_serving(cluster, "smollm2")
    assert after.replacements > before.replacements  # placed again, not recovered in place
    assert after.last_failure  # the model's status says why it was placed again
    assert len(greedy(cluster.gateway_url, PROMPTS[0])) > 0


def test_a_killed_a_stopped_and_a_cut_off_worker_each_end_the_stream_and_the_split_comes_back(
    tmp_path: Path, smollm2_path: Path
) -> None:
    with netns_cluster(
        tmp_path, "smollm2", smollm2_path, ["node-a", "node-b", "node-c"], "180MiB"
    ) as cluster:
        wait_serving(cluster, "smollm2")

        def kill_worker() -> None:
            os.kill(next(iter(cluster.worker_pids().values())), signal.SIGKILL)

        check_recovery(cluster, kill_worker, bound_s=15)

        def stop_worker() -> None:
            os.kill(next(iter(cluster.worker_pids().values())), signal.SIGSTOP)

        check_recovery(cluster, stop_worker, bound_s=DECODE_TIMEOUT_S + 10)

        def cut_a_workers_link() -> None:
            replica = cluster.replica("smollm2")
            assert replica is not None
            cluster.hosts[replica.parts[0].node_id].cut()

        check_recovery(cluster, cut_a_workers_link, bound_s=DECODE_TIMEOUT_S + 10)
        replica = cluster.replica("smollm2")
        assert replica is not None
        cut = {n for n, h in cluster.hosts.items() if "DOWN" in _link_state(h)}
        assert cut.isdisjoint({replica.node_id, *(p.node_id for p in replica.parts)})


def _link_state(host: netns.Host) -> str:
    import subprocess

    return subprocess.run(["ip", "link", "show", host.veth], capture_output=True, text=True).stdout

"""The balancer with real engines: prefix affinity, queueing with 429/503 and Retry-After, and two
gateway processes sharing their load through a real Redis (retries: test_gateway_retry.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.gateway.proxy import REPLICA_HEADER
from tests.support import oneshot
from tests.support.child_env import child_env
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.ports import server_port
from tests.support.processes import REPO, cluster_pki
from tests.support.redis_server import redis_server
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

MODELS = """
models:
  - name: smol
    source: builtin:smollm2-135m
    replicas: 2
    contextLength: 1024
    parallelSlots: 1
    threads: 1
    balancer: prefix-affinity
"""


class TwoGateways:
    def __init__(self, cluster: Cluster, second: str) -> None:
        self.cluster = cluster
        self.first = cluster.base_url
        self.second = second


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoGateways]:
    tmp = tmp_path_factory.mktemp("balancer")
    with redis_server(tmp) as url:
        first_gateway = (
            "--gateway-queue-limit",
            "1",
            "--gateway-queue-timeout-s",
            "2",
            "--gateway-redis-url",
            url,
        )
        cluster = start_cluster(tmp, MODELS, ["smol"], first_gateway)
        port = server_port()
        second = subprocess.Popen(
            [sys.executable, "-m", "llamafleet.cli.main", "gateway", "--port", str(port),
             "--controlplane", cluster.grpc, "--gateway-id", "second", "--queue-limit", "0",
             "--queue-timeout-s", "2", "--redis-url", url, "--tls-dir", str(cluster_pki(tmp) / "gateway")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=REPO, env=child_env(),
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"

        def both_ready() -> bool:
            try:
                models = oneshot.get(f"{base}/v1/models", timeout=2).json()["data"]
                first = oneshot.get(f"{cluster.base_url}/v1/models", timeout=2).json()["data"]
            except (httpx.HTTPError, ValueError, KeyError):
                return False
            return bool(models and models[0]["llamafleet"]["ready_replicas"] == 2
                        and first[0]["llamafleet"]["ready_replicas"] == 2)  # fmt: skip

        try:
            wait_until(both_ready, 120, "two ready replicas behind both gateways")
            yield TwoGateways(cluster, base)
        finally:
            second.send_signal(signal.SIGINT)
            second.wait(timeout=30)
            stop_cluster(cluster)


def ask(base: str, content: str, max_tokens: int = 4, **extra: object) -> httpx.Response:
    body = {"model": "smol", "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": content}], **extra}  # fmt: skip
    return oneshot.post(f"{base}/v1/chat/completions", json=body, timeout=120)


def test_a_conversation_returns_to_the_replica_that_holds_its_prefix(gateways: TwoGateways) -> None:
    replicas = {ask(gateways.first, "Name a river in France.").headers[REPLICA_HEADER] for _ in range(3)}
    assert len(replicas) == 1
    other = {ask(gateways.second, "Name a river in France.").headers[REPLICA_HEADER] for _ in range(2)}
    assert other == replicas  # the other gateway knows the owner through Redis


def test_busy_replicas_queue_then_429_and_503_with_retry_after_and_other_gateways_see_the_load(
    gateways: TwoGateways,
) -> None:
    done = threading.Event()
    long_runs = [
        threading.Thread(
            target=lambda i=i: (ask(gateways.first, f"Story {i}", 400, ignore_eos=True), done.set())
        )
        for i in range(2)
    ]
    for thread in long_runs:
        thread.start()

    def both_busy() -> bool:
        metrics = oneshot.get(f"{gateways.first}/metrics", timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith("llamafleet_gateway_in_flight_requests{")
        ) >= 2  # fmt: skip

    wait_until(both_busy, 30, "both slots to be taken")
    # the second gateway sees the first's load through Redis, and its queue limit is 0
    refused = ask(gateways.second, "hello")
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"]
    assert refused.json()["error"]["code"] == "queue_full"
    # on the first gateway one request may wait (queue limit 1) …
    results: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: results.append(ask(gateways.first, "hello")))
    waiter.start()
    queued = 'llamafleet_gateway_queue_length{model="smol"} 1.0'
    metrics = f"{gateways.first}/metrics"
    wait_until(lambda: queued in oneshot.get(metrics, timeout=5).text, 10, "a queued request")
    over = ask(gateways.first, "hello")  # … a second may not
    assert over.status_code == 429
    waiter.join(timeout=30)
    (timed_out,) = results
    assert timed_out.status_code == 429  # both slots stayed busy past the 2 s queue timeout
    assert timed_out.json()["error"]["code"] == "queue_timeout"
    assert timed_out.headers["retry-after"]
    assert "stayed busy" in timed_out.json()["error"]["message"]
    for thread in long_runs:
        thread.join(timeout=120)


def set_policy(gateways: TwoGateways, policy: str) -> None:
    models = Path(str(gateways.cluster.log_path)).parent / "models.yaml"
    models.write_text(MODELS.replace("balancer: prefix-affinity", f"balancer: {policy}"))

    def applied() -> bool:
        (model,) = oneshot.get(f"{gateways.first}/v1/models", timeout=5).json()["data"]
        return bool(model["llamafleet"]["balancer"] == policy and model["llamafleet"]["ready_replicas"] == 2)

    wait_until(applied, 30, f"the {policy} policy to reach the gateway")


def test_each_policy_routes_as_it_says(gateways: TwoGateways) -> None:
    try:
        set_policy(gateways, "round-robin")
        turns = [ask(gateways.first, f"Count to {i}.").headers[REPLICA_HEADER] for i in range(4)]
        assert turns[0] != turns[1]
        assert turns[0::2] == [turns[0]] * 2  # strictly in turn
        assert turns[1::2] == [turns[1]] * 2

        set_policy(gateways, "session")
        homes = set()
        for user in ("alice", "bob", "carol", "dave"):
            picks = {ask(gateways.first, f"Question {i} from {user}", user=user).headers[REPLICA_HEADER]
                     for i in range(3)}  # fmt: skip
            assert len(picks) == 1, f"{user} moved between replicas: {picks}"
            homes |= picks
        assert len(homes) == 2  # new sessions go to the least loaded, ties in turn: both replicas

        set_policy(gateways, "least-load")
        spread = {ask(gateways.first, f"Tell me {i}.").headers[REPLICA_HEADER] for i in range(4)}
        assert len(spread) == 2
    finally:
        set_policy(gateways, "prefix-affinity")

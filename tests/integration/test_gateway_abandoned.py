"""A client that gives up while its request waits for a slot must not keep that slot forever: the
gateway takes the slot later, the engine answers, and the stream that nobody reads gives it back.
(Before, a stream whose client was gone before its first byte never started its body, whose
``finally`` was where the slot went back: under saturation every slot leaked and the pool answered
nothing but 429 — found by the cluster benchmark at 1 request/s.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.support import oneshot
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

MODELS = """
models:
  - name: smol
    source: builtin:smollm2-135m
    replicas: 1
    contextLength: 1024
    parallelSlots: 1
    threads: 1
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("abandoned"), MODELS, ["smol"])
    try:
        yield running
    finally:
        stop_cluster(running)


def in_flight(base: str) -> float:
    metrics = oneshot.get(f"{base}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("llamafleet_gateway_in_flight_requests{"))  # fmt: skip


def test_a_stream_abandoned_while_queued_gives_its_slot_back(cluster: Cluster) -> None:
    base = cluster.base_url
    long = {"model": "smol", "max_tokens": 400, "ignore_eos": True, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell a long story."}]}  # fmt: skip
    busy = threading.Thread(
        target=lambda: oneshot.post(f"{base}/v1/chat/completions", json=long, timeout=120)
    )
    busy.start()
    wait_until(lambda: in_flight(base) == 1, 30, "the one slot to be taken")
    abandoned = long | {"stream": True, "max_tokens": 4}
    for _ in range(3):  # each gives up while queued behind the long answer
        with pytest.raises(httpx.ReadTimeout):
            oneshot.post(f"{base}/v1/chat/completions", json=abandoned, timeout=httpx.Timeout(30, read=0.5))
    busy.join(120)
    # The gateway served each abandoned request in turn, to nobody: every slot must come back.
    wait_until(lambda: in_flight(base) == 0, 60, "the slots of the abandoned streams to come back")
    answer = oneshot.post(f"{base}/v1/chat/completions", json=long | {"max_tokens": 2}, timeout=60)
    assert answer.status_code == 200  # and the pool still serves

"""The endpoint picker in a running cluster (`llamafleet up --gateway-picker-port`): a request routed the
way Envoy routes it through GIE's protocol reaches a real engine with the headers the picker set,
streams back through the response phases, and its conversation returns to the engine holding it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import oneshot
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.envoy_ext_proc import EnvoyLike
from tests.support.ports import server_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

MODELS = """
models:
  - name: smol
    source: builtin:smollm2-135m
    replicas: 2
    contextLength: 1024
    parallelSlots: 2
    threads: 1
"""
SYSTEM = "You are a terse assistant for a bank's support desk. Answer in one short sentence. " * 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    tmp: Path = tmp_path_factory.mktemp("picker")
    port = server_port()
    running = start_cluster(tmp, MODELS, ["smol"], ("--gateway-picker-port", str(port)))
    try:
        both = lambda: any(m["name"] == "smol" and m["ready_replicas"] == 2 for m in running.models_json())  # noqa: E731
        wait_until(both, 120, "both replicas of smol to be ready")
        yield running, f"127.0.0.1:{port}"
    finally:
        stop_cluster(running)


def test_a_request_routed_through_the_picker_is_served_by_the_engine_it_names(
    cluster: tuple[Cluster, str],
) -> None:
    _, picker = cluster
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Where is my card?"}]
    body = {"model": "smol", "max_tokens": 8, "temperature": 0, "stream": True, "messages": messages}
    first = asyncio.run(EnvoyLike(picker).route(body, upstream=True))
    assert first.status == 200, first.response_body
    assert first.served_by == first.destination  # the pick, alone: each engine answers only its secret
    events = [line[6:] for line in first.response_body.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert first.response_headers["x-llamafleet-replica"].startswith("smol-")
    # Without the picker's headers the engine answers nobody: the secret came from the pick.
    refused = oneshot.post(f"http://{first.served_by}/v1/chat/completions", json=body, timeout=30)
    assert refused.status_code == 401
    # The conversation's next turn goes back to the engine holding it.
    later = [*messages, {"role": "assistant", "content": "It is safe."}, {"role": "user", "content": "And?"}]
    turn = body | {"messages": later}
    second = asyncio.run(EnvoyLike(picker).route(turn, upstream=True))
    assert second.status == 200
    assert second.served_by == first.served_by

"""The embedded cluster, driven by the official openai client: models, chat, streaming, documented errors."""

from __future__ import annotations

import openai
import psutil
import pytest

from tests.support import oneshot
from tests.support.cluster import Cluster, stop_cluster

pytestmark = pytest.mark.integration


def client(cluster: Cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.base_url}/v1", api_key="unused", max_retries=0)


def test_openai_client_end_to_end(shared_cluster: Cluster) -> None:
    api = client(shared_cluster)

    assert [m.id for m in api.models.list().data] == ["smollm2-135m"]

    reply = api.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=20,
        temperature=0,
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0

    stream = api.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    text = "".join(pieces)
    assert len(pieces) > 3, "expected the answer in several chunks, not one buffered body"
    assert text.strip(), text
    assert finish in ("stop", "length")
    assert usage is not None
    assert usage.completion_tokens > 0

    completion = api.completions.create(
        model="smollm2-135m", prompt="The sky is", max_tokens=5, temperature=0
    )
    assert completion.choices[0].text
    assert completion.choices[0].finish_reason == "length"


def test_documented_errors(shared_cluster: Cluster) -> None:
    api = client(shared_cluster)
    with pytest.raises(openai.NotFoundError) as not_found:
        api.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert not_found.value.status_code == 404
    assert not_found.value.code == "model_not_found"

    with pytest.raises(openai.BadRequestError) as bad:
        api.chat.completions.create(model="smollm2-135m", messages=[{"role": "wizard", "content": "hi"}])  # type: ignore[misc,list-item]
    assert bad.value.status_code == 400
    body = bad.value.body
    assert isinstance(body, dict)
    assert body["param"] == "messages.0.role"

    raw = oneshot.post(
        f"{shared_cluster.base_url}/v1/chat/completions",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert raw.status_code == 400
    assert raw.json()["error"] == {
        "message": "request body is not valid JSON",
        "type": "invalid_request_error",
        "param": "body",
        "code": "invalid_request",
    }

    missing = oneshot.post(
        f"{shared_cluster.base_url}/v1/chat/completions", json={"model": "smollm2-135m"}, timeout=10
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages"


def metric(url: str, series: str) -> float:
    """One series' value in the gateway's scrape (0 before its first sample)."""
    for line in oneshot.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests(shared_cluster: Cluster) -> None:
    url = shared_cluster.base_url
    requests = 'llamafleet_gateway_requests_total{endpoint="completions",model="smollm2-135m",status="200"}'
    tokens = 'llamafleet_gateway_generated_tokens_total{model="smollm2-135m"}'
    before = metric(url, requests), metric(url, tokens)
    client(shared_cluster).completions.create(model="smollm2-135m", prompt="Hello", max_tokens=3)
    assert (metric(url, requests), metric(url, tokens)) == (before[0] + 1, before[1] + 3)
    assert oneshot.get(f"{url}/readyz", timeout=10).status_code == 200


def test_ctrl_c_leaves_no_engine_behind(cluster: Cluster) -> None:
    engines = [
        p
        for p in psutil.Process(cluster.process.pid).children(recursive=True)
        if "nodeagent.engine" in " ".join(p.cmdline())
    ]
    assert len(engines) == 1
    stop_cluster(cluster)
    assert cluster.process.returncode == 0, cluster.log()
    _gone, alive = psutil.wait_procs(engines, timeout=10)
    assert not alive, f"engine processes survived Ctrl-C: {alive}"

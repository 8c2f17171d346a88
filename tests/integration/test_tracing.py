"""OpenTelemetry traces end to end: a client's W3C trace context through the gateway to the engine,
exported over OTLP/HTTP to a receiver the test runs, with the spans and attributes docs/TRACING.md
names; and traces off by default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import oneshot
from tests.support.cluster import start_cluster, stop_cluster
from tests.support.otlp_receiver import Received, Span, otlp_receiver
from tests.support.processes import REPO

pytestmark = pytest.mark.integration

MODELS = """
models:
  - name: smol
    source: builtin:smollm2-135m
    replicas: 1
    contextLength: 512
    parallelSlots: 1
    threads: 1
"""
KEY = "sk-tracing-test-0123456789abcdef"
TRACE_ID, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
SERVER, CLIENT = 2, 3  # OTLP span kinds


def one(received: Received, name: str, service: str, kind: int = 0) -> Span:
    for _ in range(600):  # batches leave every 100 ms (OTEL_BSP_SCHEDULE_DELAY below)
        spans = [s for s in received.named(name)
                 if s.service == service and s.trace_id == TRACE_ID and kind in (0, s.kind)]  # fmt: skip
        if spans:
            (span,) = spans
            return span
        time.sleep(0.05)
    raise AssertionError(f"no {name} span from {service}: {[(s.service, s.name) for s in received.spans]}")


def test_a_clients_trace_goes_through_the_gateway_to_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with otlp_receiver() as (url, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)  # the agent passes it on to its engines
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        cluster = start_cluster(tmp_path, MODELS, ["smol"], api_key=KEY)
        try:
            body = {"model": "smol", "max_tokens": 6, "temperature": 0, "stream": True, "ignore_eos": True,
                    "messages": [{"role": "user", "content": "Name a river."}]}  # fmt: skip
            headers = {"Authorization": f"Bearer {KEY}", "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
            answer = oneshot.post(
                f"{cluster.base_url}/v1/chat/completions", json=body, headers=headers, timeout=120
            )
            assert answer.status_code == 200
            gateway = one(received, "POST /v1/chat/completions", "llamafleet-gateway", SERVER)
            queue = one(received, "gateway.queue", "llamafleet-gateway")
            pick = one(received, "balancer.pick", "llamafleet-gateway")
            engine = one(received, "engine generate", "llamafleet-engine")
            stages = {
                name: one(received, name, "llamafleet-engine")
                for name in ("engine.queue", "engine.prefill", "engine.decode")
            }
        finally:
            stop_cluster(cluster)
    # The gateway's request span continues the client's trace, under the client's span.
    assert (gateway.kind, gateway.parent_id) == (SERVER, CLIENT_SPAN)
    assert gateway.attributes["gen_ai.request.model"] == "smol"
    assert gateway.attributes["http.response.status_code"] == 200
    assert gateway.attributes["llamafleet.api_key"]  # the key's name …
    assert not any(KEY.encode() in payload for payload in received.payloads)  # … never the key
    # The queue wait and the pick under it: the policy, the replica and node, and why.
    assert queue.parent_id == pick.parent_id == gateway.span_id
    assert pick.attributes["llamafleet.balancer.policy"] == "prefix-affinity"
    assert pick.attributes["llamafleet.balancer.reason"].startswith("prefix-")
    assert pick.attributes["llamafleet.replica"] == gateway.attributes["llamafleet.replica"]
    assert pick.attributes["llamafleet.node"] == gateway.attributes["llamafleet.node"] == "test-node"
    # The call to the engine, and the engine's spans under it: the client's trace id on them.
    (call,) = [s for s in received.named("POST /v1/chat/completions") if s.kind == CLIENT]
    assert call.parent_id == gateway.span_id
    assert (engine.trace_id, engine.parent_id, engine.kind) == (TRACE_ID, call.span_id, SERVER)
    assert engine.attributes["gen_ai.usage.output_tokens"] == 6
    assert engine.attributes["gen_ai.usage.input_tokens"] > 0
    assert engine.attributes["llamafleet.ttft_s"] > 0
    assert "llamafleet.cached_tokens" in engine.attributes
    assert {s.parent_id for s in stages.values()} == {engine.span_id}
    assert stages["engine.queue"].end_ns <= stages["engine.prefill"].start_ns + 1_000_000  # in order
    assert stages["engine.prefill"].end_ns <= stages["engine.decode"].start_ns + 1_000_000
    assert gateway.start_ns <= engine.start_ns
    assert engine.end_ns <= gateway.end_ns + 50_000_000  # clocks of one machine


def test_traces_are_off_by_default_and_load_no_trace_sdk() -> None:
    """Without OTEL_* variables neither the gateway nor the engine loads OpenTelemetry's trace SDK or its
    exporter (redis-py imports the API for its own optional metrics), and no span is ever built."""
    probe = (
        "import sys, controlplane.gateway.server, nodeagent.engine.__main__;"
        "from llamafleet.core import tracing;"
        "print(json.dumps([tracing.configure('x'), tracing.tracer() is None, any(m.startswith(p) for m in"
        " sys.modules for p in ('opentelemetry.sdk.trace', 'opentelemetry.exporter'))]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", "import json;" + probe], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=120, check=True)  # fmt: skip
    assert json.loads(out.stdout) == [False, True, False]

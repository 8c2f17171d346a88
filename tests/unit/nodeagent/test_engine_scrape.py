"""The agent's /metrics/engines: every engine's samples, labelled with its replica and model."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llamafleet.contract.replica import ReplicaSpec
from nodeagent.domain import Phase, ReplicaState
from nodeagent.engine_scrape import relabel


def engine_text(requests: int) -> str:
    registry = CollectorRegistry()
    counter = Counter("llamafleet_engine_requests_total", "Requests", ["endpoint"], registry=registry)
    counter.labels('chat "v1"').inc(requests)
    Histogram("llamafleet_engine_decode_step_seconds", "Step", registry=registry).observe(0.01)
    return generate_latest(registry).decode()


def state(replica: str) -> ReplicaState:
    spec = ReplicaSpec(replica, "smol", "builtin:smollm2-135m")
    return ReplicaState(spec=spec, generation=1, phase=Phase.READY)


def test_samples_of_every_engine_keep_their_labels_and_gain_replica_and_model() -> None:
    text = relabel([(state("smol-a"), engine_text(3)), (state("smol-b"), engine_text(5))])
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = [s for s in families["llamafleet_engine_requests"].samples if s.name.endswith("_total")]
    assert {(s.labels["replica"], s.labels["model"], s.labels["endpoint"], s.value) for s in requests} == {
        ("smol-a", "smol", 'chat "v1"', 3.0),
        ("smol-b", "smol", 'chat "v1"', 5.0),
    }
    assert families["llamafleet_engine_decode_step_seconds"].type == "histogram"
    assert text.count("# TYPE llamafleet_engine_requests_total counter") == 1  # one family, both engines

"""A model's spec changes under a steady client load: new replicas start beside the old, traffic
moves as they become ready, the old drain and stop; zero failed requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import start_cluster, stop_cluster
from tests.support.load import steady_load
from tests.support.processes import engine_pids
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

MODELS = """
models:
  - name: smollm2-135m
    source: builtin:smollm2-135m
    replicas: 2
    contextLength: {}
"""


def condition(model: dict[str, Any], kind: str) -> dict[str, str]:
    return next(c for c in model["conditions"] if c["type"] == kind)


def test_a_rolling_update_under_load_fails_no_request(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path, MODELS.format(1024), ["smollm2-135m"])
    try:
        wait_until(lambda: len(engine_pids(cluster)) == 2, 60, "two engines")
        old = set(engine_pids(cluster).values())
        with steady_load(cluster.base_url, "smollm2-135m") as outcomes:
            outcomes.served(5)
            (tmp_path / "models.yaml").write_text(MODELS.format(2048))

            def rolled() -> bool:
                (model,) = cluster.models_json()
                pids = set(engine_pids(cluster).values())
                return condition(model, "Updated")["status"] == "True" and len(pids) == 2 and not pids & old

            wait_until(rolled, 120, "the rollout to finish", on_timeout=lambda: cluster.log()[-4000:])
            outcomes.served(5, at_least=21)
        assert outcomes.counts["ok"] > 20, outcomes.counts
        assert outcomes.total == outcomes.counts["ok"], (outcomes.counts, outcomes.failures)
        log = cluster.log()
        assert "rolling update" in log
        assert "draining old replica" in log
    finally:
        stop_cluster(cluster)

"""Memory fit through a running cluster: agent profiles, GET /v1/models, the admin endpoint, the CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeagent.gguf.model_facts import read_model_facts
from tests.support import oneshot
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.processes import admin_cli
from tests.support.synthetic_gguf import SyntheticShape, write_synthetic_model
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

# ~116 GiB of f16 weights: more than any machine this runs on has RAM.
HUGE = SyntheticShape(n_layer=64, n_embd=8192, n_head=64, n_head_kv=8, n_ff=28672, tied_output=False)

MODELS_YAML = """
models:
  - name: smollm2-135m
    source: builtin:smollm2-135m
    contextLength: 1024
    parallelSlots: 2
  - name: broken
    source: {broken}
  - name: huge
    source: {huge}
"""


@pytest.fixture(scope="module")
def fit_cluster(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Iterator[Cluster]:
    """One cluster for the module: its tests only read (and send one request to the good model)."""
    tmp_path = tmp_path_factory.mktemp("fit")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(smollm2_path.read_bytes()[:3_000_000])  # cut inside the tensor data
    huge = write_synthetic_model(tmp_path / "huge.gguf", HUGE, smollm2_path)  # sparse: no disk used
    running = start_cluster(tmp_path, MODELS_YAML.format(broken=broken, huge=huge), ["smollm2-135m"])
    yield running
    stop_cluster(running)


def test_models_carry_the_recommendation_and_the_admin_endpoint_evaluates_any_context(
    fit_cluster: Cluster, smollm2_path: Path
) -> None:
    models = {m["id"]: m for m in oneshot.get(f"{fit_cluster.base_url}/v1/models", timeout=10).json()["data"]}
    rec = models["smollm2-135m"]["recommendation"]
    assert rec["node"] == "test-node"  # where it runs
    assert rec["fits"] is True
    assert rec["run_as"] == {"mode": "cpu", "n_gpu_layers": 0}  # no GPU here
    weights_mib = read_model_facts(smollm2_path).weight_bytes / 2**20
    assert rec["cpu_mode"]["ram"] > weights_mib  # weights + KV + compute + output
    assert rec["cpu_mode"]["max_context_length"] == 8192  # SmolLM2's trained context fits on this machine
    assert rec["gpu_mode"] == []

    fit = oneshot.get(
        f"{fit_cluster.base_url}/v1/admin/fit",
        params={"model": "smollm2-135m", "context_length": 8192, "parallel": 4, "kv_type": "q8_0"},
        timeout=10,
    )
    assert fit.status_code == 200, fit.text
    body = fit.json()
    assert body["best_node"] == "test-node"
    (node,) = body["nodes"]
    (cpu,) = node["devices"]
    assert cpu["kv_bytes"] == 30 * 4 * 8192 * 2 * (3 * 64) * 34 // 32  # 30 layers, 4 streams, q8_0 rows
    assert node["page_cache_bytes"] == cpu["weights_bytes"]

    unknown = oneshot.get(f"{fit_cluster.base_url}/v1/admin/fit", params={"model": "nope"}, timeout=10)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "model 'nope' is not a desired model"
    wrong_kv = oneshot.get(
        f"{fit_cluster.base_url}/v1/admin/fit", params={"model": "smollm2-135m", "kv_type": "q3"}, timeout=10
    )
    assert wrong_kv.status_code == 400
    assert "q3" in wrong_kv.json()["error"]["message"]


def test_a_broken_header_is_a_clear_error_everywhere_and_nothing_crashes(fit_cluster: Cluster) -> None:
    broken = oneshot.get(f"{fit_cluster.base_url}/v1/admin/fit", params={"model": "broken"}, timeout=10)
    assert broken.status_code == 422, broken.text
    error = broken.json()["error"]
    assert error["code"] == "model_invalid"
    assert "truncated" in error["message"]
    assert "cannot estimate memory for" in fit_cluster.log()  # the agent's log says which file and why
    # the cluster keeps serving the good model
    ok = oneshot.post(
        f"{fit_cluster.base_url}/v1/chat/completions",
        json={"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert ok.status_code == 200


def test_models_list_shows_cpu_and_gpu_mode(fit_cluster: Cluster) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llamafleet.cli.main", "models", "list", "--cpu-mode", "--gpu-mode",
         "--controlplane", fit_cluster.grpc, *admin_cli(fit_cluster.tmp)],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    header, smol = (
        out.splitlines()[0],
        next(line for line in out.splitlines() if line.startswith("smollm2-135m")),
    )
    for column in ("CPU RAM", "CPU FITS", "MAX CONTEXT", "GPUS", "GPU LAYERS THAT FIT"):
        assert column in header
    assert "test-node" in smol
    assert "yes" in smol
    assert "no GPU" in smol
    assert "fit:" in out  # the broken model says why it has no estimate


def test_a_model_that_fits_nowhere_stays_pending_and_says_how_much_is_short(fit_cluster: Cluster) -> None:
    def huge() -> dict[str, object]:
        models = oneshot.get(f"{fit_cluster.base_url}/v1/models", timeout=10).json()["data"]
        found: dict[str, object] = next(m for m in models if m["id"] == "huge")
        return found

    # the agent reports the file's header once the control plane asks for it (WatchModels)
    wait_until(lambda: huge()["recommendation"] is not None, 30, "the huge model's recommendation")
    rec = huge()["recommendation"]
    assert isinstance(rec, dict)
    assert rec["fits"] is False
    assert "test-node: cpu mode needs" in rec["reason"]
    assert "short" in rec["reason"]
    assert rec["cpu_mode"]["ram"] > 100 * 1024  # MiB
    status = next(m for m in fit_cluster.models_json() if m["name"] == "huge")
    placed = next(c for c in status["conditions"] if c["type"] == "Placed")  # type: ignore[union-attr]
    assert placed["status"] == "False"
    wait_until(
        lambda: (
            "cpu mode needs"
            in next(
                c["message"]
                for m in fit_cluster.models_json()
                if m["name"] == "huge"
                for c in m["conditions"]
                if c["type"] == "Placed"  # type: ignore[union-attr]
            )
        ),
        30,
        "the Placed condition to give the fit's reason",
    )

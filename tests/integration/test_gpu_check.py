"""The prepared GPU check (bench/gpu_check.py) runs its steps on this CPU as it will on a lent GPU: the
models rebuilt from their headers, llama.cpp's buffers against the estimate, the engine's speed, and a
split whose greedy tokens equal the whole model's. What only a GPU shows is measured there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.child_env import child_env
from tests.support.processes import REPO

pytestmark = pytest.mark.integration


def test_the_dry_run_measures_every_step_on_this_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(out)], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(done.stdout.strip().splitlines()[-1])["dry_run"] is True
    assert not [name for name, section in report.items() if isinstance(section, dict) and "error" in section]
    assert report["inventory"]["devices"][0]["kind"] == "cpu"
    (row,) = report["fit"]
    assert all(c["within"] for c in row["devices"]["CPU"].values()), row
    assert row["devices"]["CPU"]["weights"]["observed_mib"] > 90  # SmolLM2's own tensors, rebuilt
    assert all(tps > 0 for tps in report["speed"]["engine_tps"].values())
    assert report["split"]["greedy_equal"] is True
    assert report["split"]["split_tps"] > 0


def test_the_device_script_says_in_one_line_when_the_bundle_is_missing(tmp_path: Path) -> None:
    env = child_env(GPU_BUNDLE=str(tmp_path / "none"))
    done = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"gpu_check.sh: no {tmp_path / 'none'}/llama-cuda.tar.gz: run 'make gpu-bundle' and carry .gpu"
    )

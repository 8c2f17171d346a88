"""The llama.cpp memory probe as a real child process on the real SmolLM2 GGUF."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nodeagent.gguf.model_facts import read_model_facts

pytestmark = pytest.mark.integration


def _probe(*args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run([sys.executable, "-m", "nodeagent.fitprobe", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def test_probe_reports_llama_cpps_buffers_and_they_match_the_header(smollm2_path: Path) -> None:
    code, result = _probe(str(smollm2_path), "--ctx", "2048", "--parallel", "2")
    assert code == 0
    assert result["ok"] is True
    totals = result["totals"]
    assert isinstance(totals, dict)
    facts = read_model_facts(smollm2_path)
    # Weights: every tensor's bytes from the header (the log rounds to 0.01 MiB).
    assert abs(totals["model"] - facts.weight_bytes) <= 6 * 1024
    # KV: one stream per sequence, f16 K and V for every layer's KV heads.
    per_token = sum(kv * (facts.head_dim_k + facts.head_dim_v) * 2 for kv in facts.n_head_kv)
    assert totals["kv"] == 2 * 2048 * per_token
    assert totals["compute"] > 0


def test_a_broken_model_fails_the_probe_not_its_caller(tmp_path: Path, smollm2_path: Path) -> None:
    broken = tmp_path / "cut.gguf"
    broken.write_bytes(smollm2_path.read_bytes()[: 5 * 1024 * 1024])
    code, result = _probe(str(broken))
    assert code == 3
    assert result["ok"] is False

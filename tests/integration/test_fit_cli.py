"""`llamafleet fit` as a user runs it: a real subprocess on the real SmolLM2 GGUF and on broken files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nodeagent.gguf.model_facts import read_model_facts
from tests.support.synthetic_gguf import SyntheticShape, write_synthetic_model

pytestmark = pytest.mark.integration


def _fit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llamafleet.cli.main", "fit", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_json_has_every_device_component_and_the_parameters(smollm2_path: Path) -> None:
    done = _fit(str(smollm2_path), "--ctx", "2048", "--parallel", "4", "--kv-type", "q8_0", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    (cpu,) = out["devices"]
    assert cpu["name"] == "CPU"
    assert cpu["kind"] == "cpu"
    components = ("weights_bytes", "kv_bytes", "compute_bytes", "output_bytes")
    assert cpu["total_bytes"] == sum(cpu[k] for k in components) + cpu["overhead_bytes"]
    assert cpu["weights_bytes"] == read_model_facts(smollm2_path).weight_bytes
    assert out["page_cache_bytes"] == cpu["weights_bytes"]  # mapped, not allocated
    assert out["ram_bytes"] == cpu["total_bytes"] - out["page_cache_bytes"]
    assert out["vram_bytes"] == 0
    assert out["params"]["context_length"] == 2048
    assert out["params"]["parallel"] == 4
    assert out["params"]["type_v"] == "q8_0"
    rec = out["recommendation"]
    assert rec["cpu_mode"]["fits"] is True
    assert rec["cpu_mode"]["max_context_length"] == 8192  # SmolLM2's trained context, on 24 GiB


def test_table_and_a_gpu_too_small(smollm2_path: Path) -> None:
    done = _fit(str(smollm2_path), "--vram", "128MiB", "--ram", "150MiB")
    assert done.returncode == 0, done.stderr
    assert "DEVICE" in done.stdout
    assert "COMPUTE" in done.stdout
    assert "does not fit" in done.stdout
    assert "short" in done.stdout  # how much is missing, per device


def test_bad_headers_give_one_clear_line_and_exit_1(tmp_path: Path, smollm2_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2_path.read_bytes()[:2_000_000])
    impossible = write_synthetic_model(
        tmp_path / "heads.gguf", SyntheticShape(n_head=8, n_head_kv=3), smollm2_path
    )
    for path, says in ((junk, "not a GGUF file"), (cut, "truncated"), (impossible, "must divide head_count")):
        done = _fit(str(path))
        assert done.returncode == 1
        assert says in done.stderr
        assert "Traceback" not in done.stderr
    bad_size = _fit(str(smollm2_path), "--vram", "lots")
    assert bad_size.returncode == 2
    assert "is not a size" in bad_size.stderr


def test_gpus_and_rpc_workers_split_layers_by_tensor_split(smollm2_path: Path) -> None:
    done = _fit(str(smollm2_path), "--vram", "4GiB", "--rpc", "10.0.0.7:50052=4GiB", "--ngl", "-1",
                "--tensor-split", "1,2", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    cpu, gpu, rpc = out["devices"]
    assert (cpu["kind"], gpu["kind"], rpc["kind"]) == ("cpu", "gpu", "rpc")
    assert gpu["layers"] == "0-10"  # 31 layers × 1/3 by llama.cpp's upper_bound rule
    assert rpc["layers"] == "11-30"  # the rest, output layer (30) included
    assert out["rpc_bytes"] == rpc["total_bytes"]
    assert out["vram_bytes"] == gpu["total_bytes"]
    assert out["params"]["tensor_split"] == [1.0, 2.0]


def test_cache_ram_counts_the_engines_prompt_cache_on_the_host_and_names_it_when_short(
    smollm2_path: Path,
) -> None:
    plain = json.loads(_fit(str(smollm2_path), "--json").stdout)
    cached = json.loads(_fit(str(smollm2_path), "--cache-ram", "1024", "--json").stdout)
    assert cached["ram_bytes"] - plain["ram_bytes"] == 1 << 30
    assert cached["devices"][0]["overhead_bytes"] == 1 << 30
    assert cached["params"]["prompt_cache_bytes"] == 1 << 30
    short = _fit(str(smollm2_path), "--cache-ram", "1024", "--ram", "512MiB")
    assert short.returncode == 0, short.stderr
    assert "1.00 GiB of it the prompt cache (cacheRam)" in short.stdout
    bad = _fit(str(smollm2_path), "--cache-ram", "-1")
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
    assert "prompt cache cannot be negative" in bad.stderr

"""Header-only memory components against figures llama.cpp reported for SmolLM2 (via nodeagent.fitprobe).

The expected numbers were printed by ``python -m nodeagent.fitprobe SMOLLM2 ARGS`` on this
llama.cpp (0.3.36's vendored copy); tests/integration/test_fit_accuracy.py re-measures live.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llamafleet.fit.components import ContextParams, kv_cache_bytes, offloaded_layers, output_bytes
from llamafleet.fit.estimate import Offload, Target, estimate
from nodeagent.gguf.model_facts import read_model_facts

LOG_ROUNDING = 6 * 1024  # llama.cpp logs MiB with two decimals


@pytest.mark.parametrize(
    ("params", "kv", "output"),
    [
        (ContextParams(2048, 2), 94371840, 398459),
        (ContextParams(4096, 4, unified=True), 377487360, 786432),
        (ContextParams(1024, 1, type_k="q8_0", type_v="q8_0"), 12530483, 199229),
        (ContextParams(512, 4, type_k="q4_0", type_v="q4_0"), 13274972, 786432),
    ],
    ids=["f16-2-streams", "f16-unified-4", "q8_0", "q4_0-4-streams"],
)
def test_kv_and_output_match_llama_cpp(
    smollm2_path: Path, params: ContextParams, kv: int, output: int
) -> None:
    profile = read_model_facts(smollm2_path).profile()
    assert abs(kv_cache_bytes(profile, params) - kv) <= LOG_ROUNDING
    assert abs(output_bytes(profile, params) - output) <= LOG_ROUNDING


def test_the_output_layer_is_offloaded_first(smollm2_path: Path) -> None:
    facts = read_model_facts(smollm2_path)
    profile = facts.profile()
    assert list(offloaded_layers(profile, 0)) == []
    assert list(offloaded_layers(profile, 1)) == [30]  # layer 30 is the output layer of 30 blocks
    assert list(offloaded_layers(profile, -1)) == list(range(31))
    embeddings = next(t.n_bytes for t in facts.tensors if t.name == "token_embd.weight")
    gpu = Offload(n_gpu_layers=-1, targets=(Target("CUDA0"),))
    everything = estimate(profile, ContextParams(), gpu)
    assert everything.device("CPU").weights_bytes == embeddings  # the input embeddings never leave the CPU
    # the rest, plus the tied output's copy of the embeddings
    assert everything.device("CUDA0").weights_bytes == facts.weight_bytes

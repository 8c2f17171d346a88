"""Header-only memory components against figures llama.cpp reported for SmolLM2 (via nodeagent.fitprobe).

The expected numbers were printed by ``python -m nodeagent.fitprobe SMOLLM2 ARGS`` on this
llama.cpp (0.3.36's vendored copy); tests/integration/test_fit_probe.py re-measures them live.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeagent.fit.components import (
    ContextParams,
    kv_cache_bytes,
    offloaded_layers,
    output_bytes,
    weight_bytes_by_place,
)
from nodeagent.fit.model_facts import read_model_facts

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
    facts = read_model_facts(smollm2_path)
    assert abs(kv_cache_bytes(facts, params) - kv) <= LOG_ROUNDING
    assert abs(output_bytes(facts, params) - output) <= LOG_ROUNDING


def test_the_output_layer_is_offloaded_first(smollm2_path: Path) -> None:
    facts = read_model_facts(smollm2_path)
    assert list(offloaded_layers(facts, 0)) == []
    assert list(offloaded_layers(facts, 1)) == [30]  # layer 30 is the output layer of 30 blocks
    assert list(offloaded_layers(facts, -1)) == list(range(31))
    embeddings = next(t.n_bytes for t in facts.tensors if t.name == "token_embd.weight")
    assert weight_bytes_by_place(facts, 0) == {"cpu": facts.weight_bytes, "gpu": 0}
    everything = weight_bytes_by_place(facts, -1)
    assert everything["cpu"] == embeddings  # the input embeddings never leave the CPU
    assert everything["gpu"] == facts.weight_bytes  # the rest, plus the tied output's copy of them

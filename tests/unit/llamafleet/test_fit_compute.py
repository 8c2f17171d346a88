"""The compute-buffer model: ggml-alloc's allocator replayed on llama.cpp's graphs.

The figures against llama.cpp itself are in tests/integration/test_fit_accuracy.py (live loads);
here: the allocator's rules on small cases worked by hand from ggml-alloc.c, and the shortcut
that simulates a few representative layers instead of all of them.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from llamafleet.fit import ggml_graph as g
from llamafleet.fit.components import ContextParams
from llamafleet.fit.compute import compute_bytes, cycle_length, representative_layers
from llamafleet.fit.forward_graph import GraphDims
from llamafleet.fit.galloc import DynamicAllocator, GraphAllocator
from llamafleet.fit.profile import ModelProfile
from tests.support.profiles import llama_like

MIB = 1 << 20


def test_the_allocator_takes_the_best_fitting_hole_and_merges_what_is_freed() -> None:
    memory = DynamicAllocator(alignment=32)
    a, b, c, d = (memory.alloc(n) for n in (100, 300, 100, 50))
    assert (a, b, c, d) == (0, 128, 448, 576)  # sizes rounded up to the alignment
    memory.free(b, 300)  # a 320-byte hole
    memory.free(d, 50)  # merges into the unbounded last block
    assert memory.alloc(96) == 128  # the hole fits, so the buffer does not grow
    memory.free(a, 100)
    assert memory.alloc(128) == 0  # best fit: the 128-byte hole, not the 224-byte one
    assert memory.max_size == 640


def test_an_in_place_op_reuses_its_only_consumers_source_and_outputs_are_kept() -> None:
    x = g.new_tensor("x", "f32", 1024, is_input=True)
    scaled = g.dup_op("scaled", "SCALE", x)  # in place: same layout, x has no other consumer
    projected = g.mul_mat("projected", g.external("w", 1024, 2048), scaled)  # never in place
    graph = g.Graph()
    graph.expand(projected)
    assert GraphAllocator().run(graph) == 4096 + 8192

    y = g.new_tensor("y", "f32", 1024, is_input=True)
    kept = g.dup_op("kept", "SCALE", y)
    kept.is_output = True
    again = g.dup_op("again", "SCALE", kept)  # an output's memory is never taken over
    graph = g.Graph()
    graph.expand(again)
    assert GraphAllocator().run(graph) == 2 * 4096


def _widened(profile: ModelProfile, n_layer: int, pattern: tuple[bool, ...] = (False,)) -> ModelProfile:
    return dataclasses.replace(
        profile,
        n_layer=n_layer,
        n_head=(profile.n_head[0],) * n_layer,
        n_head_kv=(profile.n_head_kv[0],) * n_layer,
        n_ff=(profile.n_ff[0],) * n_layer,
        swa_layers=tuple(pattern[il % len(pattern)] for il in range(n_layer)),
        layer_weight_bytes=(0,) * n_layer,
    )


SHAPES = {
    # Llama-3-8B-like (GQA); an MHA model (its allocator layout alternates between two states);
    # a Gemma-3-like model with five sliding-window layers in six
    "gqa": llama_like(),
    "mha": dataclasses.replace(
        llama_like(),
        n_embd=512,
        n_head=(8,) * 32,
        n_head_kv=(8,) * 32,
        head_dim_k=64,
        head_dim_v=64,
        vocab_size=49152,
        n_ff=(1024,) * 32,
    ),
    "swa": dataclasses.replace(
        llama_like(),
        architecture="gemma3",
        n_embd=640,
        n_head=(4,) * 32,
        n_head_kv=(1,) * 32,
        head_dim_k=256,
        head_dim_v=256,
        vocab_size=262144,
        n_ff=(2048,) * 32,
        sliding_window=512,
        qk_norm=True,
        post_norms=True,
    ),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_few_representative_layers_give_the_same_buffer_as_every_layer(shape: str) -> None:
    pattern = (True,) * 5 + (False,) if shape == "swa" else (False,)
    for n_layer, (ctx, seqs, kv, fa) in itertools.product(
        (13, 30), [(512, 1, "f16", False), (4096, 3, "f16", True), (2048, 2, "q4_0", True)]
    ):
        profile = _widened(SHAPES[shape], n_layer, pattern)
        params = ContextParams(n_ctx_per_seq=ctx, n_seq=seqs, type_k=kv, type_v=kv, flash_attn=fa)
        for layers, output, host in [(range(n_layer), True, True), (range(4, n_layer), True, False),
                                     (range(0, n_layer - 5), False, True)]:  # fmt: skip
            fast = compute_bytes(profile, params, layers, output, host)
            every = compute_bytes(profile, params, layers, output, host, every_layer=True)
            assert fast == every, (shape, n_layer, ctx, seqs, kv, fa, layers, output, host)


def test_representative_layers_keep_whole_cycles_and_the_layer_pattern() -> None:
    dims = GraphDims.of(_widened(SHAPES["swa"], 62, (True,) * 5 + (False,)))
    assert cycle_length(dims.swa_layers) == 6
    kept = representative_layers(dims, list(range(62)))
    assert kept[:6] == list(range(6))
    assert kept[-1] == 61
    assert 12 <= len(kept) < 18
    assert (62 - len(kept)) % 6 == 0  # whole cycles dropped
    tail = range(62 - len(kept) + 6, 62)
    assert [dims.swa_layers[il] for il in kept[6:]] == [dims.swa_layers[il] for il in tail]
    assert representative_layers(dims, list(range(10))) == list(range(10))


def test_the_output_layer_dominates_and_flash_attention_drops_the_score_matrix() -> None:
    profile = llama_like()
    tokens = 512
    logits = 4 * profile.vocab_size * tokens
    with_fa = compute_bytes(profile, ContextParams(8192, flash_attn=True), range(33), True)
    assert logits < with_fa < logits + 32 * MIB
    scores = 4 * 32 * 32768 * tokens  # n_head × n_kv × T, f32
    no_fa = compute_bytes(profile, ContextParams(32768, flash_attn=False), range(32), False)
    assert scores < no_fa < scores + 300 * MIB
    # a device with neither layers nor the input or output layer runs no graph
    assert compute_bytes(profile, ContextParams(), [], False, has_input=False) == 0

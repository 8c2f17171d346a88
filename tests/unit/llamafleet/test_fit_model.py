"""The memory model's rules a CPU-only machine cannot measure: offload, multi-device split, fit advice.

These follow llama.cpp's source (llama-model.cpp's layer assignment, the tied-output duplicate,
KV beside its layer); the CPU figures are checked live in tests/integration/test_fit_accuracy.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from llamafleet.core.errors import ModelFileInvalid
from llamafleet.fit.components import ContextParams, kv_cache_bytes
from llamafleet.fit.estimate import GPU_RUNTIME_OVERHEAD, Offload, Target, assign_layers, estimate
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import Gpu, NodeResources, best_node, recommend
from tests.support.profiles import GIB, MIB, llama_like


def test_cpu_only_puts_everything_on_the_cpu_as_page_cache() -> None:
    profile = llama_like()
    est = estimate(profile, ContextParams(4096))
    assert [d.name for d in est.devices] == ["CPU"]
    assert est.page_cache_bytes == profile.weight_bytes
    assert est.ram_bytes == est.device("CPU").total_bytes - profile.weight_bytes
    assert est.vram_bytes == 0


def test_without_mmap_the_weights_are_ram() -> None:
    profile = llama_like()
    est = estimate(profile, ContextParams(4096), Offload(use_mmap=False))
    assert est.page_cache_bytes == 0
    assert est.ram_bytes == est.device("CPU").total_bytes


def test_repacked_weights_are_an_extra_copy_in_ram_only_for_types_the_cpu_repacks() -> None:
    profile = llama_like()
    plain = estimate(profile, ContextParams(4096))
    avx2 = estimate(profile, ContextParams(4096), Offload(cpu_repack_types=frozenset({"Q4_K"})))
    assert avx2.device("CPU").weights_bytes - plain.device("CPU").weights_bytes == 150 * MIB
    assert avx2.page_cache_bytes == plain.page_cache_bytes
    assert avx2.ram_bytes - plain.ram_bytes == 150 * MIB
    # once the output layer is on a GPU, its repackable matrix is no longer the CPU's
    gpu = estimate(
        profile, ContextParams(4096), Offload(1, (Target("CUDA0"),), cpu_repack_types=frozenset({"Q4_K"}))
    )
    assert gpu.device("CPU").weights_bytes == profile.weight_bytes - 500 * MIB + 50 * MIB


def test_one_gpu_layer_is_the_output_layer_and_a_tied_output_copies_the_embeddings() -> None:
    untied = estimate(llama_like(), ContextParams(4096), Offload(1, (Target("CUDA0"),)))
    assert untied.device("CUDA0").layers == (32,)
    assert untied.device("CUDA0").weights_bytes == 500 * MIB
    assert untied.device("CUDA0").kv_bytes == 0  # the output layer has no KV cache
    tied = estimate(llama_like(tied=True), ContextParams(4096), Offload(1, (Target("CUDA0"),)))
    assert tied.device("CUDA0").weights_bytes == 500 * MIB  # token_embd's duplicate
    assert tied.device("CPU").weights_bytes == llama_like(tied=True).weight_bytes  # the original stays


def test_full_offload_moves_kv_and_the_output_phase_to_the_gpu() -> None:
    profile = llama_like()
    params = ContextParams(8192)
    est = estimate(profile, params, Offload(-1, (Target("CUDA0"),)))
    gpu, cpu = est.device("CUDA0"), est.device("CPU")
    assert gpu.layers == tuple(range(33))
    assert gpu.kv_bytes == kv_cache_bytes(profile, params) == 32 * 8192 * 2 * 8 * 128 * 2  # 1 GiB
    assert gpu.compute_bytes >= 4 * profile.vocab_size * 512  # the f32 logits of a 512-token micro-batch
    assert gpu.overhead_bytes == GPU_RUNTIME_OVERHEAD
    assert cpu.weights_bytes == 500 * MIB
    assert cpu.kv_bytes == 0
    # the host keeps the embeddings lookup: token ids, looked-up rows, and the unused embeddings input
    assert cpu.compute_bytes == 4 * 512 + 2 * 4 * 512 * 4096
    assert est.vram_bytes == gpu.total_bytes


def test_tensor_split_assigns_layer_ranges_in_proportion() -> None:
    profile = llama_like()
    offload = Offload(-1, (Target("CUDA0", split=3.0), Target("CUDA1", split=1.0)))
    placed = assign_layers(profile, offload)
    on_first = [il for il, dev in placed.items() if dev == 0]
    assert on_first == list(range(0, 25))  # 33 layers × 3/4 → layers 0..24, llama.cpp's upper_bound rule
    assert max(placed) == 32
    assert placed[32] == 1
    est = estimate(profile, ContextParams(4096), offload)
    per_layer = kv_cache_bytes(profile, ContextParams(4096), [0])
    assert est.device("CUDA0").kv_bytes == 25 * per_layer  # each layer's KV lives beside it
    assert est.device("CUDA1").kv_bytes == 7 * per_layer
    rpc = estimate(
        profile, ContextParams(4096), Offload(-1, (Target("CUDA0"), Target("worker-1:50052", "rpc")))
    )
    assert rpc.rpc_bytes == rpc.device("worker-1:50052").total_bytes > 0
    assert rpc.vram_bytes == rpc.device("CUDA0").total_bytes


def test_quantized_v_needs_flash_attention() -> None:
    with pytest.raises(ValueError, match="flash attention"):
        estimate(llama_like(), ContextParams(4096, type_k="q8_0", type_v="q8_0", flash_attn=False))


def test_impossible_headers_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(ModelFileInvalid, match="declare"):
        replace(llama_like(), file_size=10 * MIB).check()
    with pytest.raises(ModelFileInvalid, match="divide"):
        replace(llama_like(), n_head_kv=(7,) * 32).check()
    with pytest.raises(ModelFileInvalid, match="entries for 32 layers"):
        replace(llama_like(), n_head=(32,) * 31).check()


def test_profile_round_trips_through_json() -> None:
    profile = llama_like()
    assert ModelProfile.from_dict(profile.to_dict()) == profile


def test_recommendation_picks_the_most_layers_that_fit_and_says_why_not() -> None:
    profile = llama_like()
    params = ContextParams(8192)
    roomy = recommend(profile, params, NodeResources("big", 64 * GIB, (Gpu("CUDA0", 24 * GIB),)))
    assert roomy.best is not None
    assert roomy.best.recommend_ngl == 33
    assert roomy.to_dict()["gpu_mode"][0]["recommend_ngl"] == 33

    small = recommend(profile, params, NodeResources("small", 64 * GIB, (Gpu("CUDA0", 4 * GIB),)))
    assert small.best is not None
    assert 0 < small.best.recommend_ngl < 33
    fewer = recommend(profile, params, NodeResources("smaller", 64 * GIB, (Gpu("CUDA0", 3 * GIB),)))
    assert fewer.best is not None
    assert fewer.best.recommend_ngl < small.best.recommend_ngl

    nowhere = recommend(profile, params, NodeResources("tiny", 2 * GIB))
    assert nowhere.best is None
    assert "tiny: cpu mode needs" in nowhere.reason()
    assert "short" in nowhere.reason()
    assert nowhere.to_dict()["cpu_mode"]["fits"] is False


def test_largest_context_is_where_memory_runs_out() -> None:
    profile = llama_like()
    node = NodeResources("n", 8 * GIB)
    rec = recommend(profile, ContextParams(2048), node)
    largest = rec.cpu_mode.max_context_length
    assert 0 < largest < profile.context_length
    assert estimate(profile, ContextParams(largest)).host_bytes <= node.ram_free_bytes
    assert estimate(profile, ContextParams(largest + 256)).host_bytes > node.ram_free_bytes


def test_best_node_prefers_gpu_layers_and_reports_every_node() -> None:
    profile = llama_like()
    nodes = [
        NodeResources("cpu-box", 64 * GIB),
        NodeResources("gpu-box", 32 * GIB, (Gpu("CUDA0", 24 * GIB),)),
        NodeResources("tiny", 1 * GIB),
    ]
    best, answers = best_node(profile, ContextParams(4096), nodes)
    assert best is not None
    assert best.node == "gpu-box"
    assert [a.node for a in answers] == ["cpu-box", "gpu-box", "tiny"]
    assert not answers[2].fits

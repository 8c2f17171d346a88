"""Each buffer llama.cpp allocates, from a ``ModelProfile`` and the context parameters.

Pure functions mirroring llama.cpp's rules (read in its source, vendored in llama-cpp-python
0.3.36, and checked against its logged buffers by bench/fit_accuracy.py):

- weights: the input layer (``token_embd``) stays on the CPU; with n_gpu_layers = g the last g
  of the n_layer + 1 layers go to the GPUs, where layer n_layer is the output layer, so the
  output layer is the first to be offloaded; a tied output gets a copy of ``token_embd`` as its
  output matrix on that device (llama.cpp's TENSOR_DUPLICATED);
- KV cache: one stream per sequence unless unified; each layer stores K and V rows of
  ``head_dim × n_head_kv(layer)`` values in the cache type; sliding-window layers keep only
  ``n_swa × (n_seq if unified else 1) + n_ubatch`` cells (padded to 256) unless swa_full;
- output: f32 logits for n_seq outputs (and the embeddings when they are on).

The compute buffer is not a formula: ``llamafleet.fit.compute`` rebuilds llama.cpp's graphs and
replays its allocator.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llamafleet.fit.profile import ModelProfile

# ggml types a KV cache may use: (block size, bytes per block)
KV_TYPES = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q5_1": (32, 24),
    "q5_0": (32, 22),
    "q4_1": (32, 20),
    "q4_0": (32, 18),
    "iq4_nl": (32, 18),
}
KV_PAD = 256  # llama.cpp pads cache sizes to this many cells
F32 = 4
# Weight types llama.cpp's CPU backend re-lays out for its fast kernels, by the CPU feature needed
# (ggml-cpu/repack.cpp: ggml_repack_get_optimal_repack_type). The copy is extra host memory.
REPACK_BY_FEATURE = {
    "avx2": frozenset({"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}),
    "avx512f": frozenset({"Q2_K"}),
    "asimddp": frozenset({"Q4_0", "Q4_K", "IQ4_NL", "MXFP4", "Q5_K", "Q6_K", "Q8_0"}),  # ARM dotprod
}
REPACKABLE = frozenset().union(*REPACK_BY_FEATURE.values())


def repack_types(cpu_flags: Iterable[str]) -> frozenset[str]:
    """The weight types the CPU backend repacks on a CPU with these /proc/cpuinfo flags."""
    flags = set(cpu_flags)
    return frozenset().union(*(types for feature, types in REPACK_BY_FEATURE.items() if feature in flags))


def repacked_bytes(profile: ModelProfile, layers: Iterable[int], types: frozenset[str]) -> int:
    chosen = set(layers)
    return sum(n for kind, layer, n in profile.repack_candidates if kind in types and layer in chosen)


@dataclass(frozen=True)
class ContextParams:
    """The context llama.cpp is asked for (what the engine passes to llama_init_from_model)."""

    n_ctx_per_seq: int = 4096
    n_seq: int = 1
    n_batch: int = 512
    n_ubatch: int = 512
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool = True  # llama.cpp's "auto" turns it on wherever the device supports it
    unified: bool = False
    swa_full: bool = False
    embeddings: bool = False
    # Not llama.cpp's: the engine's prompt states saved to host memory (--cache-ram), counted at their
    # cap on the CPU's side (its RESERVE) wherever the layers are, since under load it fills to it.
    prompt_cache_bytes: int = 0

    @property
    def n_ctx(self) -> int:
        return self.n_ctx_per_seq * self.n_seq

    @property
    def graph_tokens(self) -> int:
        """Tokens in the micro-batch llama.cpp reserves its compute graph for."""
        return min(self.n_ubatch, self.n_batch, self.n_ctx)

    def check(self) -> ContextParams:
        for name in ("type_k", "type_v"):
            if getattr(self, name) not in KV_TYPES:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {', '.join(KV_TYPES)}")
        if self.type_v not in ("f32", "f16", "bf16") and not self.flash_attn:
            raise ValueError(f"a quantized V cache ({self.type_v}) needs flash attention")
        if min(self.n_ctx_per_seq, self.n_seq, self.n_batch, self.n_ubatch) <= 0:
            raise ValueError("context, sequences, batch and micro-batch must be positive")
        if self.prompt_cache_bytes < 0:
            raise ValueError("the prompt cache cannot be negative")
        return self


def _pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def row_bytes(ggml_type: str, n: int) -> int:
    block, size = KV_TYPES[ggml_type]
    if n % block:
        raise ValueError(f"a {ggml_type} row needs a multiple of {block} values, got {n}")
    return n // block * size


def kv_cells(sliding_window: int, params: ContextParams, swa: bool) -> int:
    """Cells one KV stream holds for a layer (streams: 1 if unified, else one per sequence)."""
    streams = 1 if params.unified else params.n_seq
    base = params.n_ctx // streams
    if not swa or params.swa_full:
        return base
    seqs_per_stream = params.n_seq if params.unified else 1
    return min(base, _pad(sliding_window * seqs_per_stream + params.n_ubatch, KV_PAD))


def layer_kv_bytes(profile: ModelProfile, params: ContextParams, layer: int) -> int:
    kv_heads = profile.n_head_kv[layer]
    if kv_heads == 0:
        return 0
    streams = 1 if params.unified else params.n_seq
    cells = kv_cells(profile.sliding_window, params, profile.swa_layers[layer])
    per_cell = row_bytes(params.type_k, profile.head_dim_k * kv_heads) + row_bytes(
        params.type_v, profile.head_dim_v * kv_heads
    )
    return streams * cells * per_cell


def kv_cache_bytes(profile: ModelProfile, params: ContextParams, layers: Iterable[int] | None = None) -> int:
    chosen = range(profile.n_layer) if layers is None else layers
    return sum(layer_kv_bytes(profile, params, il) for il in chosen if il < profile.n_layer)


def output_bytes(profile: ModelProfile, params: ContextParams) -> int:
    per_output = profile.vocab_size + (profile.n_embd if params.embeddings else 0)
    return F32 * per_output * max(1, params.n_seq)


def offloaded_layers(profile: ModelProfile, n_gpu_layers: int) -> range:
    """Indices in [0, n_layer] (n_layer = the output layer) that llama.cpp puts on GPUs."""
    n_layer = profile.n_layer
    ngl = n_layer + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layer + 1)
    return range(n_layer + 1 - ngl, n_layer + 1)


def layer_weight_bytes(profile: ModelProfile, layer: int) -> int:
    """Weights of block ``layer``; layer n_layer is the output layer."""
    if layer < profile.n_layer:
        return profile.layer_weight_bytes[layer]
    return profile.output_weight_bytes

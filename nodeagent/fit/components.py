"""Memory llama.cpp allocates that follows from the header alone: weights per device, KV cache, output.

Pure functions of ``ModelFacts`` and the context parameters, mirroring llama.cpp's own rules:

- weights: ``token_embd`` stays on the CPU; with n_gpu_layers = g the last g of the n_layer + 1
  layers go to the GPU, where layer n_layer is the output (``output.weight``/``output_norm``),
  so the output layer is the first to be offloaded; a model with tied output gets a copy of
  ``token_embd`` as its output matrix there (llama.cpp's TENSOR_DUPLICATED; checked against
  llama.cpp's source, not yet on a GPU);
- KV cache: one stream per sequence unless unified; each layer stores K and V rows of
  ``head_dim × n_head_kv(layer)`` values in the cache type; sliding-window layers keep only
  ``n_swa × (n_seq if unified else 1) + n_ubatch`` cells (padded to 256) unless swa_full;
- output: f32 logits for n_seq outputs (and the embeddings when they are on).

The compute buffer (graph scratch) is not here: it is calibrated against the probe.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.fit.model_facts import ModelFacts

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


@dataclass(frozen=True)
class ContextParams:
    n_ctx_per_seq: int = 4096
    n_seq: int = 1
    n_ubatch: int = 512
    type_k: str = "f16"
    type_v: str = "f16"
    unified: bool = False
    swa_full: bool = False
    embeddings: bool = False


def _pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def row_bytes(ggml_type: str, n: int) -> int:
    block, size = KV_TYPES[ggml_type]
    if n % block:
        raise ValueError(f"a {ggml_type} row needs a multiple of {block} values, got {n}")
    return n // block * size


def kv_cells(facts: ModelFacts, params: ContextParams, swa: bool) -> int:
    """Cells one KV stream holds for a layer (streams: 1 if unified, else one per sequence)."""
    streams = 1 if params.unified else params.n_seq
    base = params.n_ctx_per_seq * params.n_seq // streams
    if not swa or params.swa_full:
        return base
    seqs_per_stream = params.n_seq if params.unified else 1
    return min(base, _pad(facts.sliding_window * seqs_per_stream + params.n_ubatch, KV_PAD))


def kv_cache_bytes(facts: ModelFacts, params: ContextParams) -> int:
    streams = 1 if params.unified else params.n_seq
    total = 0
    for layer in range(facts.block_count):
        kv_heads = facts.n_head_kv[layer]
        if kv_heads == 0:
            continue
        cells = kv_cells(facts, params, facts.swa_layers[layer])
        per_cell = row_bytes(params.type_k, facts.head_dim_k * kv_heads) + row_bytes(
            params.type_v, facts.head_dim_v * kv_heads
        )
        total += streams * cells * per_cell
    return total


def output_bytes(facts: ModelFacts, params: ContextParams) -> int:
    per_output = facts.vocab_size + (facts.n_embd if params.embeddings else 0)
    return 4 * per_output * max(1, params.n_seq)


def offloaded_layers(facts: ModelFacts, n_gpu_layers: int) -> range:
    """Indices in [0, n_layer] (n_layer = the output layer) that llama.cpp puts on GPUs."""
    n_layer = facts.block_count
    ngl = n_layer + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layer + 1)
    return range(n_layer + 1 - ngl, n_layer + 1)


def weight_bytes_by_place(facts: ModelFacts, n_gpu_layers: int) -> dict[str, int]:
    """Weight bytes on "cpu" and "gpu" for this many GPU layers."""
    on_gpu = set(offloaded_layers(facts, n_gpu_layers))
    out = {"cpu": 0, "gpu": 0}
    for tensor in facts.tensors:
        if tensor.layer is not None:
            layer = tensor.layer
        elif tensor.name.startswith(("output.", "output_norm")):
            layer = facts.block_count
        else:
            layer = -1  # token embeddings and other input tensors stay on the CPU
        out["gpu" if layer in on_gpu else "cpu"] += tensor.n_bytes
        if tensor.name == "token_embd.weight" and facts.tied_output and facts.block_count in on_gpu:
            out["gpu"] += tensor.n_bytes  # the output layer's duplicate of the embeddings
    return out

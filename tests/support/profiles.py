"""Model profiles for unit tests of the memory model and placement, shaped like real models."""

from __future__ import annotations

from llamafleet.fit.profile import ModelProfile

MIB = 1 << 20
GIB = 1 << 30


def llama_like(n_layer: int = 32, layer_mib: int = 200, tied: bool = False) -> ModelProfile:
    """A Llama-3-8B-shaped profile (GQA 32/8 heads, 128-dim heads, 128k vocabulary)."""
    return ModelProfile(
        name="llama-like",
        architecture="llama",
        file_size=(n_layer * layer_mib + 1100) * MIB,
        n_layer=n_layer,
        n_embd=4096,
        n_head=(32,) * n_layer,
        n_head_kv=(8,) * n_layer,
        head_dim_k=128,
        head_dim_v=128,
        sliding_window=0,
        swa_layers=(False,) * n_layer,
        vocab_size=128256,
        tied_output=tied,
        context_length=8192,
        layer_weight_bytes=(layer_mib * MIB,) * n_layer,
        input_weight_bytes=500 * MIB,
        output_weight_bytes=0 if tied else 500 * MIB,
        token_embd_bytes=500 * MIB,
        repack_candidates=(("Q4_K", 0, 50 * MIB), ("Q4_K", n_layer, 100 * MIB)),
        n_ff=(14336,) * n_layer,
    )

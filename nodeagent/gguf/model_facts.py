"""What the memory estimator needs to know about a GGUF model, read from its header (no weights touched).

Per-layer values follow llama.cpp: a metadata key may hold one number for every layer or an
array with one per layer; head sizes default to n_embd / n_head; a model without an
``output.weight`` tensor reuses the token embeddings for its output (tied). Sliding-window
attention layers come from ``<arch>.attention.sliding_window_pattern`` when the file has it,
else from the fixed pattern llama.cpp applies to that architecture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamafleet.core.errors import ModelFileInvalid
from llamafleet.fit.components import REPACKABLE
from llamafleet.fit.profile import ModelProfile
from nodeagent.gguf.reader import (
    architecture,
    array_length,
    open_gguf,
    scalar,
    shard_paths,
    tensors_of_all_shards,
)

# Architectures whose SWA layout llama.cpp sets in code: every n-th layer is full attention.
_SWA_EVERY_NTH_DENSE = {"gemma3": 6, "gemma2": 2, "cohere2": 4, "gemma3n": 5}
_LAYER = re.compile(r"^blk\.(\d+)\.")
_OUTPUT_LAYER = ("output.", "output_norm.")  # llama.cpp's output layer; every other non-block tensor is input


@dataclass(frozen=True)
class TensorFacts:
    name: str
    layer: int | None  # None for token embeddings, output norm, output …
    ggml_type: str
    n_elements: int
    n_bytes: int
    rows: int  # ggml ne[1]: output rows of a matrix (1 for vectors)


@dataclass(frozen=True)
class ModelFacts:
    path: Path
    file_size: int
    architecture: str
    name: str
    block_count: int
    context_length: int  # trained
    n_embd: int
    n_head: tuple[int, ...]  # per layer
    n_head_kv: tuple[int, ...]  # per layer
    head_dim_k: int
    head_dim_v: int
    sliding_window: int  # 0: none
    swa_layers: tuple[bool, ...]  # per layer: uses the sliding window
    vocab_size: int
    tied_output: bool
    tensors: tuple[TensorFacts, ...]
    n_ff: tuple[int, ...] = ()  # per layer

    def layer_bytes(self) -> dict[int | None, int]:
        """Weight bytes per layer (None: tensors outside the repeating blocks)."""
        out: dict[int | None, int] = {}
        for t in self.tensors:
            out[t.layer] = out.get(t.layer, 0) + t.n_bytes
        return out

    @property
    def weight_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    def profile(self) -> ModelProfile:
        """What the memory model needs (llamafleet.fit), checked for sizes llama.cpp could not load."""
        by_layer = self.layer_bytes()
        output = sum(t.n_bytes for t in self.tensors if t.layer is None and t.name.startswith(_OUTPUT_LAYER))
        embd = sum(t.n_bytes for t in self.tensors if t.name == "token_embd.weight")
        return ModelProfile(
            name=self.name,
            architecture=self.architecture,
            file_size=self.file_size,
            n_layer=self.block_count,
            n_embd=self.n_embd,
            n_head=self.n_head,
            n_head_kv=self.n_head_kv,
            head_dim_k=self.head_dim_k,
            head_dim_v=self.head_dim_v,
            sliding_window=self.sliding_window,
            swa_layers=self.swa_layers,
            vocab_size=self.vocab_size,
            tied_output=self.tied_output,
            context_length=self.context_length,
            layer_weight_bytes=tuple(by_layer.get(il, 0) for il in range(self.block_count)),
            input_weight_bytes=by_layer.get(None, 0) - output,
            output_weight_bytes=output,
            token_embd_bytes=embd,
            repack_candidates=self._repack_candidates(),
            n_ff=self.n_ff,
            gated_ffn=self._has("ffn_gate.weight"),
            qk_norm=self._has("attn_q_norm.weight"),
            post_norms=self._has("post_attention_norm.weight") or self._has("attn_post_norm.weight"),
        ).check()

    def _has(self, block_tensor: str) -> bool:
        """Whether any repeating block has this tensor (e.g. ``ffn_gate.weight``)."""
        return any(t.layer is not None and t.name.endswith("." + block_tensor) for t in self.tensors)

    def _repack_candidates(self) -> tuple[tuple[str, int, int], ...]:
        """(ggml type, layer, bytes) of the matrices llama.cpp's CPU backend may re-lay out (CPU_REPACK).

        Those are multiplied matrices (not the embeddings, which are looked up) with a multiple of
        8 rows; the output layer counts as layer n_layer.
        """
        sums: dict[tuple[str, int], int] = {}
        for t in self.tensors:
            if t.rows == 1 or t.rows % 8 or t.name == "token_embd.weight" or t.ggml_type not in REPACKABLE:
                continue
            layer = t.layer if t.layer is not None else self.block_count
            sums[(t.ggml_type, layer)] = sums.get((t.ggml_type, layer), 0) + t.n_bytes
        return tuple((kind, layer, n) for (kind, layer), n in sorted(sums.items()))


def _per_layer(value: Any, n_layer: int, what: str, path: Path) -> tuple[int, ...]:
    if isinstance(value, list):
        if len(value) != n_layer:
            raise ModelFileInvalid(f"{path}: {what} has {len(value)} entries for {n_layer} layers")
        return tuple(int(v) for v in value)
    return (int(value),) * n_layer


def _swa_layers(reader: Any, arch: str, n_layer: int, window: int) -> tuple[bool, ...]:
    if not window:
        return (False,) * n_layer
    pattern = scalar(reader, f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list) and len(pattern) == n_layer:
        return tuple(bool(v) for v in pattern)
    every = _SWA_EVERY_NTH_DENSE.get(arch)
    if every:
        return tuple(il % every < every - 1 for il in range(n_layer))
    return (True,) * n_layer  # e.g. mistral-style: every layer windowed


def read_model_facts(path: Path) -> ModelFacts:
    reader = open_gguf(path)
    arch = architecture(reader, path)
    n_layer = int(scalar(reader, f"{arch}.block_count") or 0)
    n_embd = int(scalar(reader, f"{arch}.embedding_length") or 0)
    if n_layer <= 0 or n_embd <= 0:
        raise ModelFileInvalid(f"{path}: {arch}.block_count / embedding_length missing or zero")
    n_head = _per_layer(scalar(reader, f"{arch}.attention.head_count") or 0, n_layer, "head_count", path)
    kv_raw = scalar(reader, f"{arch}.attention.head_count_kv")
    n_head_kv = _per_layer(kv_raw, n_layer, "head_count_kv", path) if kv_raw is not None else n_head
    heads = max(n_head) or 1
    head_k = int(scalar(reader, f"{arch}.attention.key_length") or n_embd // heads)
    head_v = int(scalar(reader, f"{arch}.attention.value_length") or n_embd // heads)
    window = int(scalar(reader, f"{arch}.attention.sliding_window") or 0)
    tensors = tuple(
        TensorFacts(
            name=t.name,
            layer=int(m.group(1)) if (m := _LAYER.match(t.name)) else None,
            ggml_type=t.tensor_type.name,
            n_elements=int(t.n_elements),
            n_bytes=int(t.n_bytes),
            rows=int(t.shape[1]) if len(t.shape) > 1 else 1,
        )
        for t in tensors_of_all_shards(path, reader)
    )
    names = {t.name for t in tensors}
    ff_raw = scalar(reader, f"{arch}.feed_forward_length")
    up_rows = {t.layer: t.rows for t in tensors if t.name.endswith(".ffn_up.weight")}
    n_ff = (
        _per_layer(ff_raw, n_layer, "feed_forward_length", path)
        if ff_raw is not None
        else tuple(up_rows.get(il, 0) for il in range(n_layer))
    )
    vocab = array_length(reader, "tokenizer.ggml.tokens") or int(scalar(reader, f"{arch}.vocab_size") or 0)
    return ModelFacts(
        path=path,
        file_size=sum(shard.stat().st_size for shard in shard_paths(path, reader)),
        architecture=arch,
        name=str(scalar(reader, "general.name") or path.stem),
        block_count=n_layer,
        context_length=int(scalar(reader, f"{arch}.context_length") or 0),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_k,
        head_dim_v=head_v,
        sliding_window=window,
        swa_layers=_swa_layers(reader, arch, n_layer, window),
        vocab_size=vocab,
        tied_output="output.weight" not in names,
        tensors=tensors,
        n_ff=n_ff,
    )

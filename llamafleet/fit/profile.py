"""``ModelProfile``: what the memory model needs to know about a model, small enough to send over gRPC.

The node agent derives it from a GGUF header (``nodeagent.gguf.model_facts``); the control plane
receives it in agents' Status and estimates with it for any node, including nodes that do not
hold the file. Per-layer values follow llama.cpp (one value per repeating block).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from llamafleet.core.errors import ModelFileInvalid


@dataclass(frozen=True)
class ModelProfile:
    name: str
    architecture: str
    file_size: int
    n_layer: int
    n_embd: int
    n_head: tuple[int, ...]  # per layer
    n_head_kv: tuple[int, ...]  # per layer (0: the layer has no KV cache)
    head_dim_k: int
    head_dim_v: int
    sliding_window: int  # 0: none
    swa_layers: tuple[bool, ...]  # per layer: uses the sliding window
    vocab_size: int
    tied_output: bool
    context_length: int  # trained context
    layer_weight_bytes: tuple[int, ...]  # per repeating block
    input_weight_bytes: int  # token embeddings and other tensors that stay on the CPU
    output_weight_bytes: int  # the output layer: output.weight (absent when tied) and output_norm
    token_embd_bytes: int  # copied to the output layer's device when the output is tied
    # (ggml type, layer, bytes) of matrices the CPU backend may copy into a re-laid-out buffer
    repack_candidates: tuple[tuple[str, int, int], ...] = ()
    # the block's graph, for the compute buffer (llamafleet.fit.forward_graph)
    n_ff: tuple[int, ...] = ()  # per layer: the feed-forward width
    gated_ffn: bool = True  # ffn_gate present: act(gate(x)) * up(x), else act(up(x))
    qk_norm: bool = False  # attn_q_norm / attn_k_norm present
    post_norms: bool = False  # attn_post_norm / ffn_post_norm present (Gemma 2/3)

    @property
    def weight_bytes(self) -> int:
        return sum(self.layer_weight_bytes) + self.input_weight_bytes + self.output_weight_bytes

    def check(self) -> ModelProfile:
        """Raise ModelFileInvalid when the numbers cannot describe a model llama.cpp would load."""
        problems = []
        if self.n_layer <= 0 or self.n_embd <= 0 or self.vocab_size <= 0:
            problems.append(
                f"block_count {self.n_layer}, embedding_length {self.n_embd} and vocabulary size "
                f"{self.vocab_size} must all be positive"
            )
        for what, values in (("head_count", self.n_head), ("head_count_kv", self.n_head_kv),
                             ("sliding-window layers", self.swa_layers),
                             ("layer weights", self.layer_weight_bytes),
                             ("feed_forward_length", self.n_ff)):  # fmt: skip
            if len(values) != self.n_layer:
                problems.append(f"{what} has {len(values)} entries for {self.n_layer} layers")
        if any(h <= 0 for h in self.n_head):
            problems.append("every layer needs at least one attention head")
        if any(
            kv < 0 or kv > h or (kv and h % kv) for h, kv in zip(self.n_head, self.n_head_kv, strict=False)
        ):
            problems.append("head_count_kv must divide head_count in every layer")
        if self.head_dim_k <= 0 or self.head_dim_v <= 0:
            problems.append(f"head sizes {self.head_dim_k}/{self.head_dim_v} must be positive")
        if self.weight_bytes > self.file_size:
            problems.append(
                f"tensors declare {self.weight_bytes} bytes but the file has only {self.file_size}"
            )
        if problems:
            raise ModelFileInvalid(f"{self.name}: impossible model header: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelProfile:
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name == "repack_candidates":
                value = [tuple(item) for item in value]
            values[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

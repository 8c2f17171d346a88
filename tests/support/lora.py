"""Write small LoRA adapter GGUFs for a base model with the `gguf` package (tests and bench/engine.py).

The layout is llama.cpp's: ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha``, and for each targeted weight ``<name>.lora_a`` with ggml shape
[n_in, rank] and ``<name>.lora_b`` with ggml shape [rank, n_out] (numpy shapes are the
reverse). The weights are random: the point is an adapter that visibly changes outputs.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np


def base_shapes(base: Path, suffixes: tuple[str, ...]) -> tuple[str, dict[str, tuple[int, int]]]:
    """The base model's architecture and the ggml shapes (n_in, n_out) of the weights to adapt."""
    reader = gguf.GGUFReader(base)
    field = reader.fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode()
    shapes = {
        t.name: (int(t.shape[0]), int(t.shape[1]))
        for t in reader.tensors
        if t.name.startswith("blk.") and t.name.endswith(suffixes)
    }
    return arch, shapes


def write_lora(
    base: Path,
    out: Path,
    *,
    rank: int = 8,
    alpha: float = 8.0,
    std: float = 0.2,
    seed: int = 0,
    targets: tuple[str, ...] = ("attn_q.weight", "attn_v.weight"),
    arch_override: str | None = None,
) -> Path:
    arch, shapes = base_shapes(base, targets)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(out, arch_override or arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    for name, (n_in, n_out) in sorted(shapes.items()):
        writer.add_tensor(f"{name}.lora_a", rng.normal(0, std, (rank, n_in)).astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", rng.normal(0, std, (n_out, rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out

"""Benchmark: reading a multi-GB GGUF's header with FastGGUFReader vs the gguf package's GGUFReader.

    .venv/bin/python bench/gguf_header.py [--gib 8] [--vocab 128256] [--merges 280147]

Writes a synthetic llama-shaped GGUF with `gguf` (a Llama-3-sized vocabulary and merge list,
32 blocks of 9 tensors) whose tensor data is a sparse tail of the requested size, so it costs no
disk, then times both readers on it (best of 3) and on SmolLM2. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from nodeagent.cache.resolver import builtin_path
from nodeagent.gguf.reader import FastGGUFReader

BLOCK_TENSORS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def write_big_model(path: Path, gib: float, vocab: int, merges: int) -> Path:
    n_layer = 32
    per_tensor = int(gib * 2**30) // (n_layer * len(BLOCK_TENSORS) + 2)
    elements = per_tensor // 2  # declared as f16
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(n_layer)
    writer.add_embedding_length(4096)
    writer.add_head_count(32)
    writer.add_head_count_kv(8)
    writer.add_context_length(8192)
    writer.add_token_list([f"token{i}" for i in range(vocab)])
    writer.add_token_merges([f"a{i} b{i}" for i in range(merges)])
    writer.add_token_types([1] * vocab)
    names = ["token_embd.weight", "output.weight"] + [
        f"blk.{il}.{name}.weight" for il in range(n_layer) for name in BLOCK_TENSORS
    ]
    for name in names:
        writer.add_tensor_info(name, (elements,), np.dtype(np.float16), elements * 2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size + len(names) * (elements * 2 + 64))  # sparse: no blocks written
    return path


def best_of(n: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gib", type=float, default=8.0, help="declared size of the tensor data")
    parser.add_argument("--vocab", type=int, default=128256, help="tokens (Llama 3: 128256)")
    parser.add_argument("--merges", type=int, default=280147, help="BPE merges (Llama 3: 280147)")
    args = parser.parse_args()
    results: dict[str, Any] = {"bench": "gguf_header"}
    with tempfile.TemporaryDirectory() as tmp:
        big = write_big_model(Path(tmp) / "big.gguf", args.gib, args.vocab, args.merges)
        for label, path in (("synthetic", big), ("smollm2", builtin_path("smollm2-135m"))):
            fast = best_of(3, lambda p=path: FastGGUFReader(p))
            package = best_of(3, lambda p=path: gguf.GGUFReader(p))
            results[label] = {
                "file_gib": round(path.stat().st_size / 2**30, 2),
                "fast_s": round(fast, 4),
                "gguf_reader_s": round(package, 4),
                "speedup": round(package / fast, 1),
            }
            print(f"{label}: {results[label]}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()

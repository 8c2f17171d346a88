"""Load a model and create a context with llama.cpp, and print the buffers it allocated as JSON.

    python -m nodeagent.fitprobe MODEL.gguf [--ctx 4096 --parallel 1 --kv-type f16 --ngl 0 ...]
    python -m nodeagent.fitprobe MODEL.gguf --dry-run ...   # plan only: no weights read, nothing allocated

A real load (memory-mapped unless --no-mmap) reports the buffers llama.cpp allocated. A dry run
uses llama.cpp's no_alloc load (load mode none): the compute and output buffers are planned as
for real, the KV cache is taken from its "size = … MiB" line and the weights from
llama_model_size; it equals a real load without mmap.

Runs as a child process (native code, and a model may not fit): the agent and the fit
benchmark read its one line of JSON. Exit code 3: llama.cpp refused the model or context.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import llama_cpp

from nodeagent.fitprobe.buffers import parse_buffers

LOAD_MODE_NONE = 0  # enum llama_load_mode: read, do not map (the default, -1, maps where it can)
_KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodeagent.fitprobe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("model", type=Path)
    parser.add_argument("--ctx", type=int, default=4096, help="context per sequence, in tokens")
    parser.add_argument("--parallel", type=int, default=1, help="sequences (slots)")
    parser.add_argument("--batch", type=int, default=512, help="n_batch")
    parser.add_argument("--ubatch", type=int, default=512, help="n_ubatch")
    parser.add_argument("--kv-type", choices=sorted(_KV_TYPES), default="f16", help="K and V cache type")
    parser.add_argument(
        "--flash-attn", action="store_true", help="flash attention on (needed by quantized V)"
    )
    parser.add_argument("--unified", action="store_true", help="one KV cache shared by all sequences")
    parser.add_argument("--swa-full", action="store_true", help="full-size cache for sliding-window layers")
    parser.add_argument("--ngl", type=int, default=0, help="layers on GPUs (-1: all)")
    parser.add_argument("--no-mmap", action="store_true", help="read weights into memory instead of mapping")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="llama.cpp's no_alloc load (load mode none): plan every buffer, allocate none, read no weights",
    )  # fmt: skip
    parser.add_argument(
        "--nvml", action="store_true",
        help="also report each NVIDIA GPU's used memory (NVML) before the load and with the context made: "
        "what the CUDA runtime takes beyond llama.cpp's own buffers",
    )  # fmt: skip
    args = parser.parse_args(argv)
    used_before = _gpu_used() if args.nvml else []

    lines: list[str] = []

    def capture(_level: int, text: bytes, _data: Any) -> None:
        lines.append(text.decode(errors="replace"))

    callback = llama_cpp.llama_log_callback(capture)  # kept referenced while llama.cpp may call it

    llama_cpp.llama_log_set(callback, None)
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = args.ngl
    if args.no_mmap or args.dry_run:
        mparams.load_mode = LOAD_MODE_NONE  # no_alloc needs it: a dry run maps nothing
    mparams.no_alloc = args.dry_run
    model = llama_cpp.llama_model_load_from_file(str(args.model).encode(), mparams)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = args.ctx * args.parallel
    cparams.n_seq_max = args.parallel
    cparams.n_batch = args.batch
    cparams.n_ubatch = args.ubatch
    cparams.type_k = cparams.type_v = _KV_TYPES[args.kv_type]
    cparams.flash_attn_type = 1 if args.flash_attn else 0
    cparams.kv_unified = args.unified
    cparams.swa_full = args.swa_full
    ctx = llama_cpp.llama_init_from_model(model, cparams) if model else None
    buffers = parse_buffers("".join(lines))
    totals = buffers.totals()
    if args.dry_run and model:  # nothing was allocated: take what llama.cpp planned
        totals["model"] = int(llama_cpp.llama_model_size(model))
        totals["kv"] = buffers.kv_planned
    result = {
        "ok": bool(ctx),
        "dry_run": args.dry_run,
        "params": vars(args) | {"model": str(args.model)},
        "totals": totals,
        "buffers": {
            "model": buffers.model,
            "kv": buffers.kv,
            "output": buffers.output,
            "compute": buffers.compute,
        },
    }
    if args.nvml:
        result["nvml_used"] = {"before": used_before, "after": _gpu_used()}
    if not ctx:
        result["error"] = "".join(line for line in lines if "error" in line.lower())[-2000:]
    print(json.dumps(result))
    return 0 if ctx else 3


def _gpu_used() -> list[int]:
    """Bytes in use on each NVIDIA GPU, as the driver counts them (all processes); [] without one."""
    try:
        import pynvml

        pynvml.nvmlInit()
        used = [int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used)
                for i in range(pynvml.nvmlDeviceGetCount())]  # fmt: skip
        pynvml.nvmlShutdown()
        return used
    except Exception:  # no driver, no library: nothing to report
        return []


if __name__ == "__main__":
    sys.exit(main())

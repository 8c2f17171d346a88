"""A real draft model for a real model: the same GGUF re-quantized by llama.cpp (same vocabulary,
different weights), made once per test session."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp


def requantized(source: Path, target: Path, quant: str) -> Path:
    """``source`` re-quantized to ``quant`` (a llama.cpp file type name, e.g. "Q2_K") at ``target``."""
    if target.exists():
        return target
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.allow_requantize = True
    params.nthread = 2
    partial = target.with_suffix(".partial")
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama.cpp could not re-quantize {source} to {quant} (code {rc})")
    partial.rename(target)
    return target

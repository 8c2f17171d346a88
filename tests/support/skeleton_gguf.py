"""A real model's GGUF without its weights, and the same file again with made-up weights.

A lent GPU machine has no network and takes 64 MiB from here: SmolLM2 (98 MB) and gemma3-270m
(253 MB) cannot travel. Their headers can (1.8 MB and 6.5 MB, less gzipped): every metadata key
(architecture, tokenizer, chat template) and every tensor's name, shape, type and offset. ``fill``
writes a file of exactly the original's size and layout whose tensors hold seeded random weights,
quantized to each tensor's own type by llama.cpp's quantizer (``ggml_quantize_chunk``). What depends
only on shapes and types is the same as with the real file: llama.cpp's buffers per device, the
memory estimate from the header, the speed of every kernel. What the weights say is not: the text is
nonsense, but greedy decoding is still deterministic and varied, so equal-output checks keep meaning.

    python -m tests.support.skeleton_gguf strip MODEL.gguf MODEL.skel.gz
    python -m tests.support.skeleton_gguf fill MODEL.skel.gz MODEL.gguf [--seed 0]
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import os
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import numpy as np

MAGIC = b"LFSKEL1\0"  # then the original file's size (u64, little-endian), then its header bytes
_ROWS_PER_CHUNK = 256


def strip(source: Path, dest: Path) -> int:
    """Write ``source``'s header (everything before its tensor data) to ``dest``, gzipped; its size."""
    reader = gguf.GGUFReader(source)
    size = source.stat().st_size
    with source.open("rb") as f:
        header = f.read(reader.data_offset)
    with gzip.open(dest, "wb", compresslevel=9) as out:
        out.write(MAGIC + struct.pack("<Q", size) + header)
    return dest.stat().st_size


def _quantizer() -> ctypes.CDLL:
    import llama_cpp  # noqa: F401  (its libraries; LLAMA_CPP_LIB_PATH as llama-cpp-python reads it)

    from nodeagent.rpc.ggml import lib_dir

    lib = ctypes.CDLL(os.path.join(lib_dir(), "libggml-base.so.0"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
        ctypes.c_void_p,
    ]  # fmt: skip
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


def _weights(tensor: gguf.ReaderTensor, seed: int) -> np.ndarray:
    """Seeded weights for one tensor, float32, rows × row length (ggml's first dimension is the row)."""
    n_per_row = int(tensor.shape[0])
    rows = int(tensor.n_elements) // n_per_row
    if len(tensor.shape) == 1 and tensor.name.endswith("norm.weight"):
        return np.ones((rows, n_per_row), dtype=np.float32)  # norms near one keep activations alive
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 0.02, size=(rows, n_per_row)).astype(np.float32)


def _fill_tensor(lib: ctypes.CDLL, out: np.memmap, tensor: gguf.ReaderTensor, seed: int) -> None:
    start = int(tensor.data_offset)
    kind = gguf.GGMLQuantizationType(tensor.tensor_type)
    values = _weights(tensor, seed)
    if kind == gguf.GGMLQuantizationType.F32:
        data = values.tobytes()
    elif kind == gguf.GGMLQuantizationType.F16:
        data = values.astype(np.float16).tobytes()
    elif kind == gguf.GGMLQuantizationType.BF16:
        data = (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    else:
        rows, n_per_row = values.shape
        target = np.zeros(int(tensor.n_bytes), dtype=np.uint8)
        done = 0
        for first in range(0, rows, _ROWS_PER_CHUNK):
            count = min(_ROWS_PER_CHUNK, rows - first)
            chunk = np.ascontiguousarray(values[first : first + count])
            done += lib.ggml_quantize_chunk(
                int(kind), chunk.ctypes.data, target[done:].ctypes.data, 0, count, n_per_row, None
            )
        if done != int(tensor.n_bytes):
            raise ValueError(f"{tensor.name}: quantized {done} bytes, the header says {int(tensor.n_bytes)}")
        data = target.tobytes()
    out[start : start + len(data)] = np.frombuffer(data, dtype=np.uint8)


def fill(skeleton: Path, dest: Path, seed: int = 0, threads: int = 0) -> Path:
    """A GGUF with ``skeleton``'s header and seeded weights in every tensor, the original's size."""
    with gzip.open(skeleton, "rb") as f:
        blob = f.read()
    if not blob.startswith(MAGIC):
        raise ValueError(f"{skeleton}: not a skeleton GGUF (see tests/support/skeleton_gguf.py)")
    (size,) = struct.unpack("<Q", blob[len(MAGIC) : len(MAGIC) + 8])
    header = blob[len(MAGIC) + 8 :]
    with dest.open("wb") as f:
        f.write(header)
        f.truncate(size)
    reader = gguf.GGUFReader(dest)
    lib = _quantizer()
    for kind in {int(t.tensor_type) for t in reader.tensors}:
        lib.ggml_quantize_init(kind)  # once, before threads (it builds lookup tables)
    target = np.memmap(dest, dtype=np.uint8, mode="r+")
    tensors = list(reader.tensors)

    def one(i: int) -> None:
        _fill_tensor(lib, target, tensors[i], seed * 100_003 + i)

    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:  # the quantizer releases the GIL
        list(pool.map(one, range(len(tensors))))
    target.flush()
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.skeleton_gguf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    verbs = parser.add_subparsers(dest="verb", required=True)
    s = verbs.add_parser("strip", help="keep a GGUF's header only (gzipped)")
    s.add_argument("source", type=Path)
    s.add_argument("dest", type=Path)
    f = verbs.add_parser("fill", help="a full-size GGUF from a header, with seeded random weights")
    f.add_argument("skeleton", type=Path)
    f.add_argument("dest", type=Path)
    f.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.verb == "strip":
            print(f"{args.dest}: {strip(args.source, args.dest) / 2**20:.2f} MiB")
        else:
            fill(args.skeleton, args.dest, args.seed)
            print(f"{args.dest}: {args.dest.stat().st_size / 2**20:.1f} MiB")
    except (OSError, ValueError) as exc:
        print(f"skeleton_gguf: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

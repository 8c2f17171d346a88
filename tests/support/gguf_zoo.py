"""Broken GGUF files, each broken one way, made from a good one: the corrupt-model zoo.

Every case is what downloads, disks, converters or hostile uploads produce; each must give a precise
error, never a crash and never unbounded memory in the header reader.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from gguf import GGUFReader

Mangle = Callable[[bytes, Path], bytes]


def _patch(fmt: str, offset: int, value: int) -> Mangle:
    def mangle(data: bytes, _: Path) -> bytes:
        out = bytearray(data)
        struct.pack_into(fmt, out, offset, value)
        return bytes(out)

    return mangle


def _rename(old: bytes, new: bytes) -> Mangle:
    def mangle(data: bytes, _: Path) -> bytes:
        start = data.index(old)
        return data[:start] + new + data[start + len(old) :]

    return mangle


def _unknown_quant(data: bytes, good: Path) -> bytes:
    field = GGUFReader(good).tensors[0].field  # name length, name, dims count, dims, then the type
    return _patch("<I", field.offset + sum(int(p.nbytes) for p in field.parts[:4]), 250)(data, good)


# name → (how to break the good file's bytes, what the error must say)
CASES: dict[str, tuple[Mangle, str]] = {
    "zero-bytes": (lambda data, _: b"", "not a GGUF file"),
    "truncated-header": (lambda data, _: data[:64], "corrupt or truncated"),
    "wrong-magic": (lambda data, _: b"GGML" + data[4 : 1 << 20], "not a GGUF file"),
    "unsupported-version": (_patch("<I", 4, 99), "GGUF version 99 is not supported"),
    "absurd-tensor-count": (_patch("<Q", 8, 1 << 62), "more than a file of"),
    "absurd-metadata-count": (_patch("<Q", 16, 1 << 62), "more than a file of"),
    "key-length-past-end": (_patch("<Q", 24, 1 << 40), "runs past the end of the file"),
    "tensor-data-past-eof": (lambda data, _: data[: 5 << 20], "truncated: tensor data"),
    "unknown-architecture": (_rename(b"llama", b"zzzzz"), "architecture 'zzzzz' is not one llama.cpp knows"),
    "unknown-quantization": (_unknown_quant, "unknown quantization type (250)"),
    "missing-tokenizer": (_rename(b"tokenizer.ggml.tokens", b"tokenizer.ggml.tokenx"), "no tokenizer"),
}
SPECIAL = {  # not bytes: what the path itself is
    "a-directory": "cannot read the file (Is a directory)",
    "unreadable": "cannot read the file (Permission denied)",
}


def build(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """Write every case into ``folder``: name → (path, what its error must say)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    made = {}
    for name, (mangle, says) in CASES.items():
        path = folder / f"{name}.gguf"
        path.write_bytes(mangle(data, good))
        made[name] = (path, says)
    directory = folder / "a-directory.gguf"
    directory.mkdir(exist_ok=True)
    made["a-directory"] = (directory, SPECIAL["a-directory"])
    return made

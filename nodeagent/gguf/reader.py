"""Opening GGUF files fast with the `gguf` package: big metadata arrays are not expanded element by element.

``gguf.GGUFReader`` builds one numpy view per element of every metadata array, which for a
tokenizer of 100k+ strings takes seconds (2.4 s for SmolLM2's 49k-token vocabulary here).
``FastGGUFReader`` keeps the package's parsing and memory map but reads numeric arrays as one
view and only walks the lengths of string arrays (their count is what the fit needs), so a
header read costs about the same for a 100 MB or a 100 GB file. Corrupt bytes become
``ModelFileInvalid`` with what to do about them.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType

from llamafleet.core.errors import ModelFileInvalid

GGUF_MAGIC = b"GGUF"
# A metadata field's parts: key length, key, value type, then (arrays) item type, length, values.
_ARRAY_LENGTH = 4


class FastGGUFReader(GGUFReader):
    """GGUFReader whose array fields are ``[item type, length, values]`` (values absent for strings)."""

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list[Any], list[int], list[Any]]:
        if GGUFValueType(raw_type) != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        raw_itype = self._get(orig_offs, np.uint32)
        alen = self._get(orig_offs + 4, np.uint64)
        itype = GGUFValueType(int(raw_itype[0]))
        count = int(alen[0])
        offs = orig_offs + 12
        types = [GGUFValueType.ARRAY, itype]
        nptype = self.gguf_scalar_to_np.get(itype)
        if nptype is not None:
            values = self._get(offs, nptype, count)
            if len(values) != count:
                raise ValueError(f"array of {count} values runs past the end of the file")
            return 12 + int(values.nbytes), [raw_itype, alen, values], [2], types
        if itype == GGUFValueType.STRING:
            return self._skip_strings(offs, count) - orig_offs, [raw_itype, alen], [], types
        return super()._get_field_parts(orig_offs, raw_type)  # nested arrays: rare, left to gguf

    def _skip_strings(self, offs: int, count: int) -> int:
        little = (sys.byteorder == "little") == (self.byte_order == "I")
        length = struct.Struct("<Q" if little else ">Q")
        buffer = self.data.data  # the memory map's own buffer: no numpy object per string
        end = len(buffer)
        for _ in range(count):
            (n,) = length.unpack_from(buffer, offs)
            offs += 8 + n
            if offs > end:
                raise ValueError("string array runs past the end of the file")
        return offs


def open_gguf(path: Path) -> FastGGUFReader:
    """Memory-map and parse ``path``'s metadata and tensor table; ModelFileInvalid says what is wrong."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelFileInvalid(f"{path}: cannot read the file ({exc.strerror})") from exc
    if magic != GGUF_MAGIC:
        raise ModelFileInvalid(
            f"{path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r}); "
            "check that the source points at a .gguf model and the download completed"
        )
    _check_fixed_header(path, size)
    try:
        reader = FastGGUFReader(path, "r")
    except Exception as exc:  # gguf raises ValueError, struct.error, IndexError … on bad bytes
        raise ModelFileInvalid(f"{path}: {_what_broke(exc)}; re-download the file") from exc
    tensor_end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    if tensor_end > size:
        raise ModelFileInvalid(
            f"{path}: truncated: tensor data ends at byte {tensor_end} but the file has {size} bytes; "
            "re-download the file"
        )
    return reader


# The smallest a metadata entry (key length, empty key, value type, one byte) and a tensor info
# (name length, empty name, dimension count, one dimension, type, offset) can be on disk.
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_BYTES = 8 + 4 + 8 + 4 + 8
SUPPORTED_VERSIONS = (2, 3)


def _check_fixed_header(path: Path, size: int) -> None:
    """Version and counts, before the reader trusts them: absurd counts are refused, never allocated."""
    try:
        with path.open("rb") as f:
            fixed = f.read(24)
    except OSError as exc:
        raise ModelFileInvalid(f"{path}: cannot read the file ({exc.strerror})") from exc
    if len(fixed) < 24:
        raise ModelFileInvalid(
            f"{path}: truncated: {size} bytes, shorter than a GGUF header; re-download the file"
        )
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", fixed, 4)
    if version not in SUPPORTED_VERSIONS and struct.unpack_from(">I", fixed, 4)[0] not in SUPPORTED_VERSIONS:
        raise ModelFileInvalid(
            f"{path}: GGUF version {version} is not supported (llama.cpp reads versions 2 and 3); "
            "convert the model again with a current llama.cpp"
        )
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_BYTES > size and version in SUPPORTED_VERSIONS:
        raise ModelFileInvalid(
            f"{path}: corrupt or truncated: it declares {n_kv} metadata entries and {n_tensors} tensors, "
            f"more than a file of {size} bytes can hold; re-download the file"
        )


def _what_broke(exc: Exception) -> str:
    text = str(exc)
    if "GGMLQuantizationType" in text:
        kind = text.split(" is not")[0].split("(")[-1].rstrip(")")
        return f"a tensor has an unknown quantization type ({kind}): newer than this llama.cpp, or corrupt"
    if "cannot reshape" in text:  # a tensor's data view is shorter than its shape: the file was cut
        return "truncated: tensor data runs past the end of the file"
    if isinstance(exc, IndexError | struct.error) or "past the end" in text:
        return "corrupt or truncated: its metadata or tensor table runs past the end of the file"
    return f"corrupt or truncated GGUF ({type(exc).__name__}: {exc})"


def architecture(reader: GGUFReader, path: Path) -> str:
    arch = scalar(reader, "general.architecture")
    if not isinstance(arch, str):
        raise ModelFileInvalid(f"{path}: GGUF has no general.architecture; not a llama.cpp model")
    return arch


def scalar(reader: GGUFReader, key: str) -> Any:
    """A metadata value: str, int, float or bool; a list for arrays (strings arrays: their length)."""
    field = reader.fields.get(key)
    if field is None:
        return None
    kind = field.types[0]
    if kind == GGUFValueType.ARRAY:
        return field.parts[field.data[0]].tolist() if field.data else int(field.parts[_ARRAY_LENGTH][0])
    if not field.data:
        return None
    value = field.parts[field.data[0]]
    if kind == GGUFValueType.STRING:
        return bytes(value).decode("utf-8", errors="replace")
    return value.tolist()[0]


def array_length(reader: GGUFReader, key: str) -> int:
    field = reader.fields.get(key)
    if field is None or field.types[0] != GGUFValueType.ARRAY:
        return 0
    return int(field.parts[_ARRAY_LENGTH][0])


def shard_paths(path: Path, reader: FastGGUFReader) -> list[Path]:
    """Every shard of a split model (``…-00001-of-00003.gguf``: split.count > 1) beside ``path``,
    in order; ``[path]`` for a whole file. A missing shard is ModelFileInvalid."""
    count = int(scalar(reader, "split.count") or 0)
    if count <= 1:
        return [path]
    stem = path.name.rsplit("-", 3)[0] if path.name.count("-of-") == 1 else path.stem
    paths = [path.parent / f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise ModelFileInvalid(
            f"{path}: split model in {count} shards, {missing[0].name} is missing beside it"
        )
    return paths


def tensors_of_all_shards(path: Path, reader: FastGGUFReader) -> list[Any]:
    """The tensor table of a model, over all its shards when it is split."""
    tensors = list(reader.tensors)
    for shard in shard_paths(path, reader)[1:]:
        tensors += list(open_gguf(shard).tensors)
    return tensors

"""Reads and checks a GGUF file's header with the `gguf` package; corrupt files raise ModelFileInvalid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamafleet.core.errors import ModelFileInvalid

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    file_size: int
    version: int
    architecture: str
    name: str
    block_count: int
    context_length: int
    tensor_count: int
    tensor_bytes: int
    has_chat_template: bool


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    value = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(value).decode("utf-8", errors="replace")
    return value.tolist()[0] if hasattr(value, "tolist") else value


def read_header(path: Path) -> GGUFHeader:
    """Parse ``path``'s metadata and tensor table; raise ModelFileInvalid with what is wrong."""
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
    from gguf import GGUFReader  # numpy-heavy: imported only when a file is actually read

    try:
        reader = GGUFReader(path, "r")
    except Exception as exc:  # gguf raises ValueError, struct.error, IndexError … on bad bytes
        raise ModelFileInvalid(
            f"{path}: corrupt or truncated GGUF ({type(exc).__name__}: {exc}); re-download the file"
        ) from exc
    arch = _field(reader, "general.architecture")
    if not isinstance(arch, str):
        raise ModelFileInvalid(f"{path}: GGUF has no general.architecture; not a llama.cpp model")
    tensor_end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    if tensor_end > size:
        raise ModelFileInvalid(
            f"{path}: truncated: tensor data ends at byte {tensor_end} but the file has {size} bytes; "
            "re-download the file"
        )
    return GGUFHeader(
        path=path,
        file_size=size,
        version=int(_field(reader, "GGUF.version") or 0),
        architecture=arch,
        name=str(_field(reader, "general.name") or path.stem),
        block_count=int(_field(reader, f"{arch}.block_count") or 0),
        context_length=int(_field(reader, f"{arch}.context_length") or 0),
        tensor_count=len(reader.tensors),
        tensor_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        has_chat_template="tokenizer.chat_template" in reader.fields,
    )

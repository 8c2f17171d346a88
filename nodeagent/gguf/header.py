"""Reads and checks a GGUF file's header with the `gguf` package; corrupt files raise ModelFileInvalid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llamafleet.core.errors import ModelFileInvalid
from nodeagent.gguf.reader import architecture, open_gguf, scalar, shard_paths, tensors_of_all_shards


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


def read_header(path: Path) -> GGUFHeader:
    """Parse ``path``'s metadata and tensor table; raise ModelFileInvalid with what is wrong."""
    reader = open_gguf(path)
    arch = architecture(reader, path)
    if not scalar(reader, f"{arch}.block_count"):
        raise ModelFileInvalid(
            f"{path}: no {arch}.block_count: architecture {arch!r} is not one llama.cpp knows, or the "
            "header is corrupt"
        )
    if "tokenizer.ggml.tokens" not in reader.fields:
        raise ModelFileInvalid(
            f"{path}: no tokenizer (tokenizer.ggml.tokens): llama.cpp cannot load it; the conversion that "
            "wrote it was incomplete"
        )
    tensors = tensors_of_all_shards(path, reader)
    return GGUFHeader(
        path=path,
        file_size=sum(p.stat().st_size for p in shard_paths(path, reader)),
        version=int(scalar(reader, "GGUF.version") or 0),
        architecture=arch,
        name=str(scalar(reader, "general.name") or path.stem),
        block_count=int(scalar(reader, f"{arch}.block_count") or 0),
        context_length=int(scalar(reader, f"{arch}.context_length") or 0),
        tensor_count=len(tensors),
        tensor_bytes=sum(int(t.n_bytes) for t in tensors),
        has_chat_template="tokenizer.chat_template" in reader.fields,
    )

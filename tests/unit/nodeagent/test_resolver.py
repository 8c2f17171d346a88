"""Model source resolution: builtins found through package metadata, local paths, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamafleet.core.errors import InvalidRequest, ModelNotFound
from nodeagent.cache.resolver import resolve


def test_builtin_resolves_to_the_packaged_gguf() -> None:
    path = resolve("builtin:smollm2-135m")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 90_000_000


def test_paths(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert resolve(str(model)) == model
    assert resolve(f"file://{model}") == model
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve(str(tmp_path / "other.gguf"))


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("builtin:nope", ModelNotFound),
        ("s3://bucket/m.gguf", InvalidRequest),
        ("relative.gguf", InvalidRequest),
    ],
)
def test_refusals(source: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        resolve(source)

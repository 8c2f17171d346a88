"""Generated protobuf code must match what `make protos` produces from the .proto sources."""

from __future__ import annotations

from pathlib import Path

from tools.gen_protos import ROOT, generate


def test_generated_code_matches_sources(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    committed = sorted(
        p.relative_to(ROOT)
        for p in (ROOT / "protos" / "gen").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert fresh == committed, "generated files differ from protos/gen: run `make protos`"
    stale = [str(p) for p in fresh if (tmp_path / p).read_bytes() != (ROOT / p).read_bytes()]
    assert not stale, f"stale generated code, run `make protos`: {stale}"

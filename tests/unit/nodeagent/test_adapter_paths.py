"""Runtime adapter loads stay inside the node's adapter folders, whatever the path says."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamafleet.core.errors import Forbidden, InvalidRequest
from nodeagent.engine.adapters import confined


def test_paths_inside_are_allowed_and_every_way_out_is_refused(tmp_path: Path) -> None:
    folder, outside = tmp_path / "adapters", tmp_path / "elsewhere.gguf"
    folder.mkdir()
    outside.write_bytes(b"x")
    (folder / "tone.gguf").write_bytes(b"x")
    (folder / "escape.gguf").symlink_to(outside)
    (folder / "sub").symlink_to(tmp_path)
    assert confined("tone.gguf", [folder]) == (folder / "tone.gguf").resolve()
    assert confined(str(folder / "tone.gguf"), [folder]) == (folder / "tone.gguf").resolve()
    for path in (str(outside), f"{folder}/../elsewhere.gguf", "../elsewhere.gguf",
                 str(folder / "escape.gguf"), "sub/elsewhere.gguf", "/etc/passwd"):  # fmt: skip
        with pytest.raises(Forbidden):
            confined(path, [folder])
    assert confined(str(outside), []) == outside  # an engine run by hand, with no folders: any path


def test_a_nul_in_the_path_is_a_400_not_a_crash(tmp_path: Path) -> None:
    """Found by the fuzzer: Path.resolve() raised ValueError (a 500) on an embedded NUL."""
    for folders in ([tmp_path], []):
        with pytest.raises(InvalidRequest, match="NUL"):
            confined("tone\0.gguf", folders)

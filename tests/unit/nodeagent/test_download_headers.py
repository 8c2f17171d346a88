"""Which download URLs a configured header prefix covers: scheme, host, port and whole path segments,
never a raw string prefix (``https://art.corp`` once matched ``https://art.corp.evil.io``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nodeagent.cache.node_store import headers_from, prefix_matches


@pytest.mark.parametrize(
    ("prefix", "url", "matches"),
    [
        ("https://art.corp", "https://art.corp/models/a.gguf", True),
        ("https://art.corp", "https://art.corp.evil.io/models/a.gguf", False),
        ("https://art.corp", "https://art.corp@evil.io/a.gguf", False),
        ("https://art.corp", "http://art.corp/a.gguf", False),
        ("https://art.corp", "https://ART.corp:443/a.gguf", True),
        ("https://art.corp:8443", "https://art.corp/a.gguf", False),
        ("https://art.corp/models", "https://art.corp/models/a.gguf", True),
        ("https://art.corp/models/", "https://art.corp/models/a.gguf", True),
        ("https://art.corp/models", "https://art.corp/models-x/a.gguf", False),
        ("art.corp", "https://art.corp/a.gguf", False),
    ],
)
def test_prefixes_match_by_origin_and_segments(prefix: str, url: str, matches: bool) -> None:
    assert prefix_matches(prefix, url) is matches


def test_the_longest_matching_prefix_wins(tmp_path: Path) -> None:
    path = tmp_path / "headers.yaml"
    path.write_text(yaml.safe_dump({
        "https://art.corp": {"X-Token": "org"},
        "https://art.corp/team-a": {"X-Token": "team-a"},
    }))  # fmt: skip
    headers_for = headers_from(path)
    assert headers_for("https://art.corp/team-a/m.gguf") == {"X-Token": "team-a"}
    assert headers_for("https://art.corp/team-b/m.gguf") == {"X-Token": "org"}
    assert headers_for("https://art.corp.evil.io/team-a/m.gguf") == {}

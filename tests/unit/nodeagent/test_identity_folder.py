"""Where a node keeps its certificate."""

from __future__ import annotations

from nodeagent.settings import AgentSettings


def test_nodes_sharing_a_data_folder_keep_their_own_identity() -> None:
    """A shared model cache (one PersistentVolumeClaim for every agent pod) must not make nodes overwrite
    each other's certificates."""
    shared = {"supervisor": {"data_dir": "/models"}}
    a, b = AgentSettings(node_id="node-a", **shared), AgentSettings(node_id="node-b", **shared)  # type: ignore[arg-type]
    assert a.identity_dir() != b.identity_dir()
    assert a.identity_dir().parent == b.identity_dir().parent

"""Nodes built from the machine fixtures (tests/unit/controlplane/fixtures/machines.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from controlplane.domain import CachedModelInfo, NodeRecord
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import Gpu

GIB = 1 << 30
FIXTURES = Path(__file__).resolve().parent.parent / "unit" / "controlplane" / "fixtures" / "machines.json"


def machine_types() -> dict[str, dict[str, Any]]:
    return {k: v for k, v in json.loads(FIXTURES.read_text()).items() if not k.startswith("_")}


def node_from(
    name: str, kind: dict[str, Any], models: dict[str, ModelProfile], **overrides: Any
) -> NodeRecord:
    """A connected node of this machine type holding these model files (source → profile)."""
    node = NodeRecord(
        node_id=name,
        connected=True,
        models_reported=True,
        labels=dict(kind.get("labels", {})),
        ram_total_bytes=int(kind["ram_total"] * GIB),
        ram_free_bytes=int(kind["ram_free"] * GIB),
        gpus=tuple(Gpu(g["name"], int(g["free"] * GIB), int(g["total"] * GIB)) for g in kind.get("gpus", [])),
        cpu_flags=tuple(kind.get("cpu_flags", ())),
        cpu_usable=int(kind.get("cpus", 0)),
        cached_models={source: CachedModelInfo(p.file_size, p) for source, p in models.items()},
    )
    for key, value in overrides.items():
        setattr(node, key, value)
    return node

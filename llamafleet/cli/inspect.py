"""`llamafleet nodes` and `llamafleet models`: the cluster as the control plane sees it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from controlplane.api.client import ClusterClient
from controlplane.domain import ModelStatusView, NodeRecord

GiB = 1 << 30


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def format_nodes(nodes: list[NodeRecord]) -> str:
    if not nodes:
        return "no nodes have connected yet (is a `llamafleet agent` running and pointed here?)"
    rows = [["NODE", "CONNECTED", "CPU", "CORES", "RAM FREE/TOTAL", "GENERATION", "DEVICES"]]
    for n in nodes:
        rows.append(
            [
                n.node_id,
                "yes" if n.connected else "no",
                n.cpu_model[:32],
                str(n.cpu_logical_cores),
                f"{n.ram_free_bytes / GiB:.1f}/{n.ram_total_bytes / GiB:.1f} GiB",
                f"{n.applied_generation}/{n.desired_generation}",
                "; ".join(n.devices),
            ]
        )
    return _table(rows)


def format_models(models: list[ModelStatusView]) -> str:
    if not models:
        return "no models are desired (check the control plane's --models file)"
    lines = []
    rows = [["MODEL", "READY", "SOURCE"]]
    for m in models:
        rows.append([m.name, f"{m.ready_replicas}/{m.desired_replicas}", m.source])
    lines.append(_table(rows))
    for m in models:
        lines.append(f"\n{m.name}:")
        for c in m.conditions:
            lines.append(f"  {c.type}={c.status} ({c.reason}){': ' + c.message if c.message else ''}")
        for r in m.replicas:
            where = r.node_id or "-"
            note = f"  {r.message}" if r.message else ""
            lines.append(f"  replica {r.replica_id} on {where}: {r.phase.value}, restarts {r.restarts}{note}")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "value") and not isinstance(value, (int, str)):
        return value.value
    if hasattr(value, "model_dump"):
        return value.model_dump(by_alias=True)
    return value


async def show_nodes(address: str, as_json: bool) -> str:
    client = ClusterClient(address)
    try:
        nodes = await client.list_nodes()
    finally:
        await client.close()
    return json.dumps(_jsonable(nodes), indent=2) if as_json else format_nodes(nodes)


async def show_models(address: str, as_json: bool) -> str:
    client = ClusterClient(address)
    try:
        models = await client.list_models()
    finally:
        await client.close()
    return json.dumps(_jsonable(models), indent=2) if as_json else format_models(models)

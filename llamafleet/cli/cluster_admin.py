"""`llamafleet nodes` and `llamafleet models`: the cluster as the control plane sees it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from controlplane.api.client import ClusterClient
from controlplane.domain import ModelStatusView, NodeRecord
from llamafleet.security.grpc_tls import ClientTls, CredentialFiles
from llamafleet.security.pki import default_pki_dir

GiB = 1 << 30
MiB = 1 << 20


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def node_state(node: NodeRecord) -> list[str]:
    """Why nothing new is placed on ``node``, or why its replicas move away: for people."""
    return [
        *(["cordoned"] if node.cordoned else []),
        *(["Kubernetes Node cordoned"] if node.unschedulable else []),
        *([f"draining ({node.draining})"] if node.draining else []),
        *(["Kubernetes Node deleted"] if node.deleted else []),
    ]


def format_nodes(nodes: list[NodeRecord]) -> str:
    if not nodes:
        return "no nodes have connected yet (is a `llamafleet agent` running and pointed here?)"
    rows = [["NODE", "CONNECTED", "CPU", "THREADS/CPUS", "RAM FREE/TOTAL", "GENERATION", "DEVICES", "NVIDIA"]]
    for n in nodes:
        rows.append(
            [
                n.node_id,
                ", ".join(["yes" if n.connected else "no", *node_state(n)]),
                n.cpu_model[:32],
                f"{n.threads}/{n.cpu_summary or n.cpu_logical_cores}",
                f"{n.ram_free_bytes / GiB:.1f}/{n.ram_total_bytes / GiB:.1f} GiB",
                f"{n.applied_generation}/{n.desired_generation}",
                "; ".join(n.devices),
                n.nvml or "-",
            ]
        )
    return _table(rows)


def _fit_columns(m: ModelStatusView, cpu_mode: bool, gpu_mode: bool) -> list[str]:
    rec = m.recommendation
    if rec is None:
        return ["-"] * (1 + 3 * cpu_mode + 3 * gpu_mode)
    cells = [rec.node]
    if cpu_mode:
        cpu = rec.cpu_mode
        cells += [f"{cpu.ram_bytes / MiB:,.0f} MiB", "yes" if cpu.fits else "no", str(cpu.max_context_length)]
    if gpu_mode:
        gpus = rec.gpu_mode[-1] if rec.gpu_mode else None  # all of the node's GPUs together
        if gpus is None:
            cells += ["no GPU", "-", "-"]
        else:
            cells += [gpus.name, f"{gpus.vram_bytes / MiB:,.0f} MiB", f"{gpus.recommend_ngl}/{gpus.ngl}"]
    return cells


def format_models(models: list[ModelStatusView], cpu_mode: bool = False, gpu_mode: bool = False) -> str:
    if not models:
        return "no models are desired (check the control plane's --models file)"
    lines = []
    header = ["MODEL", "READY", "SOURCE"]
    if cpu_mode or gpu_mode:
        header.append("FIT NODE")
    if cpu_mode:
        header += ["CPU RAM", "CPU FITS", "MAX CONTEXT"]
    if gpu_mode:
        header += ["GPUS", "VRAM (ALL LAYERS)", "GPU LAYERS THAT FIT"]
    rows = [header]
    for m in models:
        row = [m.name, f"{m.ready_replicas}/{m.desired_replicas}", m.source]
        if cpu_mode or gpu_mode:
            row += _fit_columns(m, cpu_mode, gpu_mode)
        rows.append(row)
    lines.append(_table(rows))
    for m in models:
        lines.append(f"\n{m.name}:")
        for c in m.conditions:
            lines.append(f"  {c.type}={c.status} ({c.reason}){': ' + c.message if c.message else ''}")
        if m.scaling is not None:
            current = len(m.replicas)
            panic = ", panic" if m.scaling.panic else ""
            lines.append(f"  autoscaling: {m.scaling.replicas} desired, {current} now, demand "
                         f"{m.scaling.demand:g}{panic}: {m.scaling.reason}")  # fmt: skip
        if (cpu_mode or gpu_mode) and m.fit_error:
            lines.append(f"  fit: {m.fit_error}")
        for r in m.replicas:
            where = r.node_id or "-"
            note = f"  {r.message}" if r.message else ""
            threads = f", {r.threads} thread{'s' if r.threads != 1 else ''}" if r.threads else ""
            lines.append(
                f"  replica {r.replica_id} on {where}: {r.phase.value}{threads}, restarts {r.restarts}{note}"
            )
            for p in r.parts:
                lines.append(f"    layers {p.first_layer}-{p.last_layer} on {p.node_id} (RPC worker at "
                             f"{p.endpoint or '-'}): {p.phase.value}")  # fmt: skip
            if r.head_layers:
                first, last = r.head_layers
                lines.append(f"    layers {first}-{last} and the output on {where} (head)")
            if r.last_failure:
                lines.append(f"    split placed again after: {r.last_failure}")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "value") and not isinstance(value, (int, str)):
        return value.value
    if hasattr(value, "model_dump"):
        return value.model_dump(by_alias=True)
    return value


def admin_tls(tls_dir: Path | None, insecure: bool) -> ClientTls | None:
    """The CLI's credential: an admin certificate (CN llamafleet:admin), by default the one the
    control plane generated on this machine."""
    return None if insecure else ClientTls(CredentialFiles(tls_dir or default_pki_dir() / "admin"))


async def show_nodes(address: str, as_json: bool, tls: ClientTls | None = None) -> str:
    client = ClusterClient(address, tls)
    try:
        nodes = await client.list_nodes()
    finally:
        await client.close()
    return json.dumps(_jsonable(nodes), indent=2) if as_json else format_nodes(nodes)


async def forget(address: str, node_id: str, tls: ClientTls | None = None) -> str:
    client = ClusterClient(address, tls)
    try:
        was_pinned, was_connected = await client.forget_node(node_id)
    finally:
        await client.close()
    done = f"node {node_id} forgotten: its certificates are refused from now on"
    if was_connected:
        done += "; its stream was ended (an agent holding the bootstrap token joins again with a new key)"
    elif not was_pinned:
        done += " (no key was kept for it)"
    return done + "; the bootstrap token may join that id again"


async def cordon(address: str, node_id: str, cordoned: bool, tls: ClientTls | None = None) -> str:
    client = ClusterClient(address, tls)
    try:
        node = await client.cordon_node(node_id, cordoned)
    finally:
        await client.close()
    if cordoned:
        return (f"node {node.node_id} cordoned: nothing new is placed there; its replicas move to other "
                "nodes, each stopped once its replacement serves (see `llamafleet models`)")  # fmt: skip
    return f"node {node.node_id} uncordoned: placements may use it again"


async def show_models(
    address: str, as_json: bool, cpu_mode: bool = False, gpu_mode: bool = False, tls: ClientTls | None = None
) -> str:
    client = ClusterClient(address, tls)
    try:
        models = await client.list_models()
    finally:
        await client.close()
    if as_json:
        return json.dumps([_model_json(m) for m in models], indent=2)
    return format_models(models, cpu_mode, gpu_mode)


def _model_json(m: ModelStatusView) -> dict[str, Any]:
    out: dict[str, Any] = _jsonable(dataclasses.replace(m, recommendation=None))
    out["recommendation"] = m.recommendation.to_dict() if m.recommendation else None
    return out

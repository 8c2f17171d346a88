"""The engines' metrics, gathered by the agent: one scrape target per node instead of one per engine.

Engines listen on ports that change with every (re)start, which no ServiceMonitor can name; the
agent knows them. ``/metrics/engines`` on the agent's probe port fetches every running engine's
``/metrics`` and returns the samples with ``replica`` and ``model`` labels added.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from llamafleet.security.engine_auth import engine_headers
from nodeagent.domain import Phase, ReplicaState


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())) + "}"


def relabel(texts: Iterable[tuple[ReplicaState, str]]) -> str:
    """Merge engines' exposition texts into one, each sample labelled with its replica and model."""
    families: dict[str, tuple[str, str, list[str]]] = {}  # name → (type, help, sample lines)
    for state, text in texts:
        extra = {"replica": state.spec.replica_id, "model": state.spec.model}
        for family in text_string_to_metric_families(text):
            # The parser names a counter without _total (OpenMetrics); the text format names it with.
            name = f"{family.name}_total" if family.type == "counter" else family.name
            kind, help_text, lines = families.setdefault(name, (family.type, family.documentation, []))
            for sample in family.samples:
                lines.append(f"{sample.name}{_labels({**sample.labels, **extra})} {sample.value!r}")
    out = []
    for name, (kind, help_text, lines) in families.items():
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines]
    return "\n".join(out) + "\n"


async def gather(states: Iterable[ReplicaState], timeout_s: float = 2.0) -> str:
    """Every ready engine's metrics; an engine that does not answer in time is left out of this scrape."""
    ready = [s for s in states if s.phase == Phase.READY and s.endpoint]
    async with httpx.AsyncClient(timeout=timeout_s) as client:

        async def one(state: ReplicaState) -> tuple[ReplicaState, str] | None:
            try:
                response = await client.get(f"{state.endpoint}/metrics", headers=engine_headers(state.secret))
            except httpx.HTTPError:
                return None
            return (state, response.text) if response.status_code == 200 else None

        answers = await asyncio.gather(*(one(s) for s in ready))
    return relabel(a for a in answers if a is not None)

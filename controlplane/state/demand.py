"""What the gateways say each model is asked for: the autoscaler's signal (docs/AUTOSCALING.md).

Every gateway reports, about once a second and at once when a request starts waiting for a model
with no ready replica, per model: requests it has in engines (decoding or waiting for a slot
there), requests queued or held in the gateway, and when the last inference request arrived.
Engines are reachable only through gateways (they require the secret only gateways hold), so
the sum over gateways is every request the model has: busy slots + the engines' own queues +
the gateways' queues. A gateway whose report is older than ``STALE_S`` no longer counts; with no
fresh report at all the signal is unknown, and the autoscaler holds the replica count.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

STALE_S = 5.0


@dataclass(frozen=True)
class ModelLoad:
    in_engines: int = 0  # forwarded to a replica, answer not finished
    queued: int = 0  # waiting in the gateway: for a slot, or for a first replica (held)
    last_request_unix: float = 0.0  # wall-clock time of the last inference request (0: none yet)

    @property
    def demand(self) -> int:
        return self.in_engines + self.queued


@dataclass
class _Report:
    received: float
    models: dict[str, ModelLoad]


@dataclass
class DemandBook:
    stale_s: float = STALE_S
    _reports: dict[str, _Report] = field(default_factory=dict)
    # Set when requests wait for a model at zero: the autoscaler decides at once, not at its next tick.
    urgent: asyncio.Event = field(default_factory=asyncio.Event)

    def report(self, gateway_id: str, models: dict[str, ModelLoad], now: float | None = None) -> None:
        self._reports[gateway_id] = _Report(time.monotonic() if now is None else now, dict(models))

    def fresh_gateways(self, now: float | None = None) -> int:
        return len(self._fresh(now))

    def load(self, model: str, now: float | None = None) -> ModelLoad | None:
        """The model's load summed over gateways reporting now; None when no gateway reports."""
        fresh = self._fresh(now)
        if not fresh:
            return None
        loads = [r.models.get(model, ModelLoad()) for r in fresh]
        return ModelLoad(
            sum(x.in_engines for x in loads),
            sum(x.queued for x in loads),
            max(x.last_request_unix for x in loads),
        )

    def _fresh(self, now: float | None) -> list[_Report]:
        now = time.monotonic() if now is None else now
        for gateway in [g for g, r in self._reports.items() if now - r.received > self.stale_s * 10]:
            del self._reports[gateway]  # long gone: forget it
        return [r for r in self._reports.values() if now - r.received <= self.stale_s]

"""One model's replica count from its demand: Knative's windows, adapted to slots (docs/AUTOSCALING.md).

Called about once a second with the model's demand (requests in engines + queued in gateways).
Capacity per replica is ``parallelSlots × targetUtilization`` requests, so:

- stable: desired = ceil(mean demand over ``stableWindow`` ÷ capacity);
- panic: when the mean over the short ``panicWindow`` asks for at least twice the replicas the
  model has, the panic window's figure rules and nothing scales down until a whole stable window
  passes without such a burst;
- from zero: a model at zero with requests waiting gets ceil(waiting ÷ capacity) replicas at once
  (all started together, not one at a time);
- scale-down happens only to the highest count wanted during the last ``scaleDownDelay``, never
  below half of the current count in one decision, and only after the scaler has watched a whole
  stable window (a fresh control plane has no history: it must not read that as "no load");
- to zero only with minReplicas 0, no request for ``idleTimeout`` and nothing waiting;
- always within [minReplicas, maxReplicas].

"Current" counts every replica the model has — starting ones included — so a replica on its way
is capacity, and a burst that arrives while replicas start does not order more of them again.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

from controlplane.domain import AutoscalingSpec

PANIC_THRESHOLD = 2.0  # panic when the short window wants this many times the current replicas
MAX_SCALE_DOWN_RATE = 2.0  # one decision keeps at least current ÷ this


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str  # for people: why this count, with the figures
    panic: bool = False


class ModelScaler:
    def __init__(self, spec: AutoscalingSpec, slots: int, started: float, last_request: float = 0.0) -> None:
        self.spec = spec
        self.slots = slots
        self._started = started
        self._samples: collections.deque[tuple[float, float]] = collections.deque()
        self._wanted: collections.deque[tuple[float, int]] = collections.deque()
        self.panic_until = 0.0
        self.last_request = last_request  # monotonic time of the last inference request (0: none seen)

    def reconfigure(self, spec: AutoscalingSpec, slots: int) -> None:
        self.spec, self.slots = spec, slots

    def decide(self, now: float, current: int, demand: float, requested: bool) -> Decision:
        """``current``: replicas the model has (any phase); ``requested``: a request arrived since the
        last call (or one is in flight)."""
        spec = self.spec
        if requested or demand > 0:
            self.last_request = now
        self._samples.append((now, demand))
        while self._samples and now - self._samples[0][0] >= spec.stable_s:
            self._samples.popleft()
        capacity = max(self.slots * spec.target_utilization, 1e-9)
        stable = _mean(self._samples, now - spec.stable_s)
        burst = _mean(self._samples, now - spec.panic_s)
        want_stable, want_panic = math.ceil(stable / capacity - 1e-9), math.ceil(burst / capacity - 1e-9)
        if want_panic > current and want_panic >= PANIC_THRESHOLD * max(current, 1):
            self.panic_until = now + spec.stable_s
        panic = now < self.panic_until
        idle_for = now - (self.last_request or self._started)
        if current == 0 and demand > 0:
            wanted, why = math.ceil(demand / capacity), f"from zero: {demand:g} request(s) waiting"
        elif current > 0 and demand == 0 and spec.min_replicas == 0 and idle_for >= spec.idle_s:
            return Decision(0, f"no request for {spec.idle_timeout}: scaling to zero")
        elif panic:
            wanted = max(current, want_panic)
            why = f"panic: {burst:.1f} requests over {spec.panic_window} for {current} replica(s)"
        else:
            wanted = want_stable
            why = f"{stable:.1f} requests on average over {spec.stable_window}"
            if wanted == 0 and current > 0:
                wanted, why = 1, f"{why}; idle for {idle_for:.0f}s of {spec.idle_timeout}"
        held, waiting_for = self._after_delay(now, wanted, current, panic)
        if held > wanted:
            why += f"; keeping {held}: {waiting_for}"
        wanted = held
        bounded = min(max(wanted, spec.min_replicas), spec.max_replicas)
        if bounded != wanted:
            why += f" (held at {'minReplicas' if bounded > wanted else 'maxReplicas'} {bounded})"
        return Decision(bounded, why, panic)

    def _after_delay(self, now: float, wanted: int, current: int, panic: bool) -> tuple[int, str]:
        """Scale down only to the most wanted over the last scaleDownDelay, by at most half, and only
        once a whole stable window has been watched."""
        self._wanted.append((now, wanted))
        while self._wanted and now - self._wanted[0][0] > self.spec.scale_down_s:
            self._wanted.popleft()
        if wanted >= current or current == 0:
            return wanted, ""
        if panic:
            return current, "no scale-down while bursts last"
        if now - self._started < self.spec.stable_s:
            return current, f"watching a first {self.spec.stable_window} before scaling down"
        highest = max(w for _, w in self._wanted)
        if highest > wanted:
            return highest, f"demand must stay lower for {self.spec.scale_down_delay}"
        return max(wanted, math.ceil(current / MAX_SCALE_DOWN_RATE)), "at most half the replicas go at once"


def _mean(samples: collections.deque[tuple[float, float]], since: float) -> float:
    values = [d for t, d in samples if t > since]
    return sum(values) / len(values) if values else 0.0

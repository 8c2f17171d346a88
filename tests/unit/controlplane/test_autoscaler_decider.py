"""The autoscaler's windows, driven second by second on a fake clock (controlplane/autoscaler/decider.py)."""

from __future__ import annotations

from controlplane.autoscaler.decider import ModelScaler
from controlplane.domain import AutoscalingSpec


def scaler(**spec: object) -> ModelScaler:
    fields = {"maxReplicas": 10, "minReplicas": 1, "stableWindow": "60s", "panicWindow": "6s",
              "scaleDownDelay": "120s", "idleTimeout": "300s", **spec}  # fmt: skip
    return ModelScaler(AutoscalingSpec.model_validate(fields), slots=4, started=0.0)


def run(s: ModelScaler, start: int, end: int, demand: float, current: int) -> int:
    """Feed one sample a second over [start, end) and follow every decision; the final count."""
    for t in range(start, end):
        current = s.decide(float(t), current, demand, demand > 0).replicas
    return current


def test_steady_load_settles_on_capacity_and_never_flaps() -> None:
    s = scaler()
    # 10 requests in flight, 4 slots x 0.8 = 3.2 per replica: 4 replicas.
    current = run(s, 0, 120, 10, 1)
    assert current == 4
    changes = 0
    for t in range(120, 720):  # 10 minutes of noise around the same load
        demand = 10 + (3 if t % 7 == 0 else -3 if t % 5 == 0 else 0)
        decided = s.decide(float(t), current, demand, True).replicas
        changes += decided != current
        current = decided
    assert changes <= 1, changes


def test_a_burst_panics_within_the_panic_window_and_scale_down_waits_for_the_delay() -> None:
    s = scaler()
    current = run(s, 0, 70, 2, 1)
    assert current == 1
    first = s.decide(70.0, current, 30, True)
    assert first.panic
    assert first.replicas >= 2
    current = run(s, 70, 76, 30, current)  # one panic window of 30 requests: 30 / 3.2 → 10
    assert current == 10
    current = run(s, 76, 140, 2, current)  # the burst is over, but panic holds a stable window
    assert current == 10
    current = run(s, 140, 200, 2, current)
    assert current == 10, "scale-down waits for scaleDownDelay of lower demand"
    current = run(s, 200, 400, 2, current)
    assert current == 1


def test_from_zero_starts_enough_replicas_for_what_waits_at_once() -> None:
    s = scaler(minReplicas=0)
    decision = s.decide(0.0, 0, 50, True)
    assert decision.replicas == 10
    assert "from zero" in decision.reason
    assert scaler(minReplicas=0).decide(0.0, 0, 7, True).replicas == 3  # ceil(7 / 3.2)


def test_idle_goes_to_zero_only_after_the_idle_timeout() -> None:
    s = scaler(minReplicas=0)
    current = run(s, 0, 10, 3, 1)
    assert current == 1
    current = run(s, 10, 300, 0, current)
    assert current == 1, "idle for less than idleTimeout keeps one replica"
    decision = s.decide(311.0, current, 0, False)
    assert decision.replicas == 0
    assert "scaling to zero" in decision.reason
    assert scaler(minReplicas=1).decide(1000.0, 1, 0, False).replicas == 1


def test_a_new_scaler_does_not_read_missing_history_as_no_load() -> None:
    s = scaler()  # e.g. a new leader: 6 replicas running, the first samples are low
    current = run(s, 0, 59, 1, 6)
    assert current == 6
    decision = s.decide(59.0, 6, 1, True)
    assert "watching a first 60s" in decision.reason


def test_scale_down_is_at_most_half_per_decision() -> None:
    s = scaler(scaleDownDelay="1s")
    assert run(s, 0, 60, 0.5, 8) == 8  # the first stable window is only watched
    seen = [s.decide(float(t), 8, 0.5, True).replicas for t in (60,)]
    for t in range(61, 64):
        seen.append(s.decide(float(t), seen[-1], 0.5, True).replicas)
    assert seen == [4, 2, 1, 1]


def test_bounds_are_kept_and_said() -> None:
    s = scaler(maxReplicas=3)
    decision = s.decide(0.0, 1, 100, True)
    assert decision.replicas == 3
    assert "maxReplicas 3" in decision.reason

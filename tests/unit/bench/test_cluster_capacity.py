"""The cluster benchmark's capacity arithmetic (bench/cluster_vs_service.py): the highest rate at
which enough requests met the objectives, and what a ratio of two capacities can say when one of
them lies outside the rates swept."""

from __future__ import annotations

import pytest

from bench.cluster_vs_service import capacities, capacity, sweep_rates


def by_rate(*pairs: tuple[float, float]) -> dict[float, dict[str, float]]:
    return {rate: {"attainment": got, "ttft_p90_s": 1.0, "goodput_rps": rate * got} for rate, got in pairs}


def test_capacity_is_interpolated_where_attainment_crosses_the_target() -> None:
    # 0.95 at 1/s, 0.85 at 2/s: the line between them crosses 0.9 halfway
    assert capacity(by_rate((1.0, 0.95), (2.0, 0.85)), 0.9) == pytest.approx(1.5)


def test_capacity_stops_at_the_first_rate_that_misses() -> None:
    # a later rate that meets the target again does not raise it past the first miss
    got = capacity(by_rate((1.0, 0.95), (2.0, 0.5), (3.0, 0.95)), 0.9)
    assert got == pytest.approx(1 + 0.05 / 0.45, abs=1e-3)
    assert capacity(by_rate((1.0, 0.85), (2.0, 1.0)), 0.9) is None


def test_a_capacity_past_the_swept_rates_is_a_bound_and_so_is_its_ratio() -> None:
    results = capacities(
        {
            "w": {
                "service": by_rate((1.0, 0.85), (2.0, 0.8)),  # below 1/s
                "ours": by_rate((1.0, 0.95), (2.0, 0.93)),  # at least 2/s
            }
        },
        0.9,
    )["w"]
    assert results["service"]["capacity_rps"] is None
    assert results["service"]["capacity_bound"] == "below"
    assert results["ours"]["capacity_rps"] == 2.0
    assert results["ours"]["capacity_bound"] == "at_least"
    # ours ≥ 2, the Service's < 1: the ratio is more than 2
    assert results["ours"]["capacity_vs_service"] == 2.0
    assert results["ours"]["ratio_bound"] == "at_least"
    assert results["ours"]["by_rate"]["1.0"]["goodput_vs_service"] == pytest.approx(0.95 / 0.85, abs=1e-3)


@pytest.mark.parametrize(
    ("ours", "service", "ratio", "bound"),
    [
        (((1.0, 0.95), (2.0, 0.85)), ((1.0, 0.95), (2.0, 0.85)), 1.0, "exact"),
        (((1.0, 0.95), (2.0, 0.95)), ((1.0, 0.95), (2.0, 0.85)), 4 / 3, "at_least"),  # 2+ over 1.5
        (((1.0, 0.95), (2.0, 0.85)), ((1.0, 0.95), (2.0, 0.95)), 0.75, "at_most"),  # 1.5 over 2+
        (((1.0, 0.8), (2.0, 0.8)), ((1.0, 0.95), (2.0, 0.85)), 1 / 1.5, "at_most"),  # < 1 over 1.5
        (((1.0, 0.95), (2.0, 0.95)), ((1.0, 0.95), (2.0, 0.95)), None, None),  # 2+ over 2+
        (((1.0, 0.8), (2.0, 0.8)), ((1.0, 0.8), (2.0, 0.8)), None, None),  # < 1 over < 1
    ],
)
def test_the_ratio_says_which_way_it_is_bounded(
    ours: tuple[tuple[float, float], ...], service: tuple[tuple[float, float], ...], ratio: float | None,
    bound: str | None,
) -> None:  # fmt: skip
    got = capacities({"w": {"service": by_rate(*service), "ours": by_rate(*ours)}}, 0.9)["w"]["ours"]
    assert got["ratio_bound"] == bound
    assert got["capacity_vs_service"] == (None if ratio is None else pytest.approx(ratio, abs=1e-3))


def test_rates_per_workload_must_name_every_workload_run() -> None:
    assert sweep_rates("1,0.5", ["a", "b"]) == {"a": [0.5, 1.0], "b": [0.5, 1.0]}
    assert sweep_rates("a=2,1; b=0.2", ["a", "b"]) == {"a": [1.0, 2.0], "b": [0.2]}
    with pytest.raises(ValueError, match="no rates for b"):
        sweep_rates("a=1", ["a", "b"])

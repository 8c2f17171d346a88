"""The one rule for threads per replica that the scheduler counts with and the agent starts engines by."""

from __future__ import annotations

from llamafleet.core.threads import ThreadWant, cpu_request, share_threads

AUTO = ThreadWant()


def test_replicas_left_to_the_node_share_its_cpus_evenly() -> None:
    assert share_threads(2, [AUTO]) == [2]
    assert share_threads(2, [AUTO, AUTO]) == [1, 1]
    assert share_threads(8, [AUTO, AUTO, AUTO]) == [3, 3, 2]  # the remainder to the first


def test_asked_for_counts_and_gpu_replicas_come_off_the_top() -> None:
    assert share_threads(8, [ThreadWant(threads=4), AUTO]) == [4, 4]
    assert share_threads(8, [ThreadWant(gpu_mode=True), AUTO]) == [1, 7]
    assert share_threads(8, [ThreadWant(threads=3, gpu_mode=True)]) == [3]  # asked for: as asked


def test_never_zero_even_when_a_node_is_shared_beyond_its_cpus() -> None:
    assert share_threads(2, [AUTO, AUTO, AUTO]) == [1, 1, 1]  # shareCpus: threads compete for cores
    assert share_threads(2, [ThreadWant(threads=4), AUTO]) == [4, 1]
    assert share_threads(0, [AUTO]) == [1]


def test_placement_holds_what_a_replica_asks_for_else_one() -> None:
    assert cpu_request(0) == 1
    assert cpu_request(6) == 6

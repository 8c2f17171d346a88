"""Soak: 64 concurrent clients for 60 s against `llamafleet up` with two replicas, mixing chat,
streaming (a quarter of the streams cancelled midway), completions and embeddings.

Reports latency percentiles of completed requests, throughput, every outcome by kind (anything
other than success, a client's own cancellation, or 429/503 with Retry-After is an error), whether
every engine slot and every gateway in-flight count went back to idle, and each process's memory
before and after. There is no baseline to compare with: its figures are absolute, for this
machine, and the errors must be zero. Prints one JSON line last.

    .venv/bin/python bench/soak.py [--clients 64] [--seconds 60]
    .venv/bin/python bench/soak.py --clients 32 --seconds 3600     # the hour (issue 34)

Every ``--sample-s`` (30 s) each process's RSS, open file descriptors and threads are read; after
``--warmup-s`` (300 s, or a tenth of a shorter run) the RSS slope per process is the least-squares
line through the samples, in MiB per 10 minutes (target ≤ 1), and again over the second half of
those samples (an engine's host prompt cache, ``--cache-ram``, 1 GiB, fills in the first minutes of
mixed work and then holds: the second half says whether anything still grows once it has); fds and
threads their range.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.cluster import start_cluster, stop_cluster
from tests.support.soak import (
    MODELS,
    Sampler,
    engine_urls,
    gateway_in_flight,
    idle_check,
    processes,
    rss_mib,
    soak,
)
from tests.support.wait import wait_until


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", "--duration", dest="seconds", type=float, default=60)
    parser.add_argument("--sample-s", type=float, default=30.0, help="how often processes are read")
    parser.add_argument("--warmup-s", type=float, default=300.0, help="samples before this are not in slopes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = start_cluster(Path(tmp), MODELS, ["smollm2-135m"])
        try:
            wait_until(lambda: len(engine_urls(cluster)) == 2, 60, "both replicas")
            asyncio.run(soak(cluster.base_url, "smollm2-135m", clients=4, seconds=3))  # warm-up
            before = rss_mib(processes(cluster.process.pid))
            sampler = Sampler(list(before), args.sample_s)
            sampler.start()
            try:
                result = asyncio.run(soak(cluster.base_url, "smollm2-135m", args.clients, args.seconds))
            finally:
                sampler.stop()
            time.sleep(2)
            health = idle_check(engine_urls(cluster))
            after = rss_mib(list(before))
            in_flight = gateway_in_flight(cluster)
            names = {pid: f"{psutil.Process(pid).cmdline()[2]} (pid {pid})" for pid in before if pid in after}
        finally:
            stop_cluster(cluster)
    summary = result.summary()
    report = {
        "bench": "soak",
        "clients": args.clients,
        **summary,
        "slots_idle_after": all(h["slots_idle"] == h["slots_total"] for h in health),
        "gateway_in_flight_after": in_flight,
        "rss_mib": {names[pid]: {"before": before[pid], "after": after[pid]} for pid in names},
        "trends": {names[pid]: sampler.trend(pid, min(args.warmup_s, args.seconds / 10)) for pid in names},
        "target_rss_mib_per_10min": 1.0,
        "failures": result.failures[:5],
    }
    print(
        f"{summary['requests']} requests in {summary['seconds']} s, {summary['completed_per_s']}/s "
        f"completed; p50 {summary['latency_p50_s']} s, p99 {summary['latency_p99_s']} s; errors "
        f"{summary['errors']}; slots idle after: {report['slots_idle_after']}",
        file=sys.stderr,
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()

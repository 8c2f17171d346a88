"""The environment of every llamafleet process a test starts.

Under parallel test workers (pytest-xdist, ``TEST_WORKERS`` in the Makefile) several tests' engines share
the machine's cores. llama.cpp's threads wait for each other by spinning, so two engines that each
compute with every core spin on each other's cores and both crawl (the engine fuzz test took 93 s
beside another worker's engines, 25 s alone). There every engine computes with one thread unless the
test passes its own count; the tests about how an agent shares CPUs (test_cpu_threads.py) turn this
off with ``machine_threads``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

ONE_THREAD_ENV = {
    "LLAMAFLEET_AGENT__SUPERVISOR__ENGINE_THREADS": "1",  # the agent's share for a Model without threads
    # An engine started by hand without --n-threads (its settings: prefix LLAMAFLEET_ENGINE_, field
    # engine; the name without ENGINE_ twice had never reached it, so such engines took every core).
    "LLAMAFLEET_ENGINE_ENGINE__N_THREADS": "1",
}
_machine_threads = False


def parallel_workers() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if parallel_workers() > 1 and not _machine_threads:
        env = ONE_THREAD_ENV | env  # what the test's own environment sets wins
    return env | extra


@contextmanager
def machine_threads() -> Iterator[None]:
    """Processes started meanwhile compute with the machine's CPUs, as users' do."""
    global _machine_threads
    _machine_threads = True
    try:
        yield
    finally:
        _machine_threads = False

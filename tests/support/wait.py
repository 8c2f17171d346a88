"""Polling until a condition holds, for tests and benchmarks that drive real processes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import httpx

from tests.support import oneshot


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2,
    on_timeout: Callable[[], str] | None = None,
) -> None:  # fmt: skip
    """Poll ``predicate``; on timeout fail with ``what`` and, when given, ``on_timeout()`` (e.g. logs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    detail = f"\n{on_timeout()}" if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


def wait_http_ok(
    process: subprocess.Popen[bytes], url: str, timeout: float, what: str, log: Callable[[], str]
) -> None:
    """Wait until ``url`` answers 200; fail at once, with the process's log, if the process exits."""

    def ok() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}:\n{log()}")
        try:
            return oneshot.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ok, timeout, f"{what} at {url}")

"""A steady client load for fault tests: threads sending short requests through the gateway, every
outcome counted by kind, so a test can state what must (and must not) have happened meanwhile."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from tests.support.wait import wait_until


@dataclass
class Outcomes:
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)  # what went wrong, for the assertion message
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, detail: str = "") -> None:
        with self.lock:
            self.counts[kind] += 1
            if detail and len(self.failures) < 20:
                self.failures.append(detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def served(self, more: int = 3, at_least: int = 0, timeout: float = 60) -> None:
        """Wait until ``more`` further requests succeed (and ``at_least`` in all): the load is flowing
        before a fault, or flows again after it — a condition, not a fixed sleep."""
        with self.lock:
            target = max(self.counts["ok"] + more, at_least)
        wait_until(lambda: self.counts["ok"] >= target, timeout, f"{target} requests to succeed",
                   on_timeout=lambda: f"{self.counts} {self.failures}")  # fmt: skip


@contextmanager
def steady_load(
    base_url: str, model: str, clients: int = 2, max_tokens: int = 8, pause_s: float = 0.1
) -> Iterator[Outcomes]:
    """``clients`` threads in a loop of chat completions until the block ends, each pausing ``pause_s``
    between requests: requests are in flight most of the time, yet the load leaves CPU to the processes
    under test (on two cores, an unpaced load starves the control plane it is meant to observe)."""
    outcomes = Outcomes()
    stop = threading.Event()
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": max_tokens}

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                one(http)
                stop.wait(pause_s)

    def one(http: httpx.Client) -> None:
        started = time.monotonic()
        try:
            response = http.post(f"{base_url}/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            outcomes.add("connection", f"{type(exc).__name__}: {exc}")
            return
        if response.status_code == 200:
            outcomes.add("ok")
            return
        retry = response.headers.get("retry-after")
        kind = f"{response.status_code}" + ("+retry-after" if retry else "")
        outcomes.add(kind, f"{kind} after {time.monotonic() - started:.1f}s: {response.text[:200]}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for thread in threads:
            thread.join(90)

"""A client that chats through the gateway one request after another, counting every answer that is not
a 200: what "zero failed requests" is measured with while the cluster changes under it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from tests.support.wait import wait_until


@dataclass
class ClientLoop:
    """Chat requests one after another through the gateway, counting every answer that is not a 200."""

    url: str
    parallel: int = 1  # clients, each one request after another
    max_tokens: int = 4
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        body = {
            "model": "smol",
            "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": "Hi"}],
        }
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(f"{self.url}/v1/chat/completions", json=body)
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.05)

    def served(self, more: int = 3, at_least: int = 0) -> None:
        """Wait until ``more`` further requests succeed (``at_least`` in all): answers flow (again)."""
        target = max(self.ok + more, at_least)
        wait_until(lambda: self.ok >= target, 60, f"{target} answers",
                   on_timeout=lambda: f"{self.ok} ok, failures: {self.failures[:5]}")  # fmt: skip

    @contextmanager
    def running(self) -> Iterator[ClientLoop]:
        threads = [threading.Thread(target=self.run, daemon=True) for _ in range(self.parallel)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(60)

"""A soak load: many clients for a while, mixing chat, streaming (some cancelled midway),
completions and embeddings; every outcome counted by kind, latencies kept, leaks checked after.

Used by bench/soak.py (the hour, figures in docs/BENCHMARKS.md) and, for two minutes, by
tests/faults/test_soak.py; ``Sampler`` reads every process's RSS, fds and threads while it runs.
"""

from __future__ import annotations

import asyncio
import collections
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from tests.support import oneshot
from tests.support.cluster import Cluster

KINDS = ("chat", "stream", "completion", "embeddings")
CLEAN = ("200", "cancelled", "429+retry-after", "503+retry-after")
WORDS = ("alpha", "beta", "gamma", "delta", "omega")


@dataclass
class SoakResult:
    seconds: float
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)  # "kind:status"
    latencies: list[float] = field(default_factory=list)  # seconds, completed requests
    failures: list[str] = field(default_factory=list)

    def add(self, kind: str, status: str, took: float, detail: str = "") -> None:
        self.outcomes[f"{kind}:{status}"] += 1
        if status in ("200", "cancelled"):
            self.latencies.append(took)
        elif detail and len(self.failures) < 20:
            self.failures.append(f"{kind}:{status}: {detail}")

    def errors(
        self, allowed: tuple[str, ...] = ("200", "cancelled", "429+retry-after", "503+retry-after")
    ) -> dict[str, int]:
        return {k: n for k, n in self.outcomes.items() if k.split(":", 1)[1] not in allowed}

    def summary(self) -> dict[str, Any]:
        done = sorted(self.latencies)
        pick = (
            (lambda q: round(done[min(len(done) - 1, int(q * len(done)))], 3)) if done else (lambda q: None)
        )
        return {
            "seconds": round(self.seconds, 1),
            "requests": sum(self.outcomes.values()),
            "completed_per_s": round(len(done) / self.seconds, 2),
            "latency_p50_s": pick(0.5),
            "latency_p99_s": pick(0.99),
            "latency_mean_s": round(statistics.fmean(done), 3) if done else None,
            "outcomes": dict(sorted(self.outcomes.items())),
            "errors": self.errors(),
        }


async def _one(
    http: httpx.AsyncClient, base: str, model: str, kind: str, rng: random.Random
) -> tuple[str, str]:
    """One request of ``kind``: (status, detail)."""
    words = " ".join(
        rng.choice(("alpha", "beta", "gamma", "delta", "omega")) for _ in range(rng.randint(1, 40))
    )
    if kind == "embeddings":
        inputs: Any = words if rng.random() < 0.5 else [words] * rng.randint(1, 4)
        response = await http.post(f"{base}/v1/embeddings", json={"model": model, "input": inputs})
    elif kind == "completion":
        body = {"model": model, "prompt": words, "max_tokens": rng.randint(1, 24)}
        response = await http.post(f"{base}/v1/completions", json=body)
    else:
        messages = [{"role": "user", "content": words}]
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": rng.randint(1, 24),
            "stream": kind == "stream",
        }
        if kind == "stream":
            cancel_after = rng.randint(1, 4) if rng.random() < 0.25 else None
            async with http.stream("POST", f"{base}/v1/chat/completions", json=body) as streamed:
                if streamed.status_code != 200:
                    await streamed.aread()
                    return _status(streamed), streamed.text[:200]
                chunks = 0
                async for line in streamed.aiter_lines():
                    chunks += line.startswith("data: {")
                    if '"error"' in line:
                        return "stream-error", line[:200]
                    if cancel_after is not None and chunks >= cancel_after:
                        return "cancelled", ""  # the client goes away mid-stream
                return "200", ""
        response = await http.post(f"{base}/v1/chat/completions", json=body)
    return _status(response), "" if response.status_code == 200 else response.text[:200]


def _status(response: httpx.Response) -> str:
    retry = "+retry-after" if response.headers.get("retry-after") else ""
    return f"{response.status_code}{retry}"


async def soak(base: str, model: str, clients: int, seconds: float, embeddings: bool = True) -> SoakResult:
    kinds = KINDS if embeddings else KINDS[:3]
    result = SoakResult(seconds)
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)

    async def client(index: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(index)
        while time.monotonic() < deadline:
            kind = rng.choice(kinds)
            started = time.monotonic()
            try:
                status, detail = await _one(http, base, model, kind, rng)
            except httpx.HTTPError as exc:
                status, detail = "connection", f"{type(exc).__name__}: {exc}"
            result.add(kind, status, time.monotonic() - started, detail)
            if status.startswith(("429", "503")):
                await asyncio.sleep(0.2)  # as a polite client honouring Retry-After would, briefly

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    result.seconds = time.monotonic() - started
    return result


def rss_mib(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            found[pid] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
        except psutil.Error:
            continue
    return found


def idle_check(engine_urls: list[str]) -> list[dict[str, Any]]:
    """Each engine's /health after the soak: every slot must be idle again."""
    return [oneshot.get(f"{url}/health", timeout=10).json() | {"url": url} for url in engine_urls]


MODELS = """
models:
  - name: smollm2-135m
    source: builtin:smollm2-135m
    replicas: 2
    parallelSlots: 4
    embeddings: true
"""


def engine_urls(cluster: Cluster) -> list[str]:
    (model,) = cluster.models_json()
    replicas: list[dict[str, Any]] = model["replicas"]  # type: ignore[assignment]
    return [r["endpoint"] for r in replicas if r["endpoint"]]


def gateway_in_flight(cluster: Cluster) -> float:
    lines = oneshot.get(f"{cluster.base_url}/metrics", timeout=10).text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith("llamafleet_gateway_in_flight{"))


class Sampler:
    """Each process's RSS (MiB), open fds and threads every ``every_s`` seconds, on a thread."""

    def __init__(self, pids: list[int], every_s: float) -> None:
        self._pids, self._every = pids, every_s
        self.samples: dict[int, list[tuple[float, float, int, int]]] = {pid: [] for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            for pid in self._pids:
                try:
                    proc = psutil.Process(pid)
                    with proc.oneshot():
                        row = (time.monotonic() - self._started, proc.memory_info().rss / 2**20,
                               proc.num_fds(), proc.num_threads())  # fmt: skip
                except psutil.Error:
                    continue
                self.samples[pid].append(row)
            if self._stop.wait(self._every):
                return

    def trend(self, pid: int, warmup_s: float) -> dict[str, object]:
        rows = [r for r in self.samples[pid] if r[0] >= warmup_s] or self.samples[pid]
        if len(rows) < 2:
            return {"samples": len(rows)}
        rss = [r[1] for r in rows]
        later = rows[len(rows) // 2 :]  # the second half: after a bounded cache has filled, if it has
        return {
            "samples": len(rows),
            "rss_mib_per_10min": round(_slope(rows) * 600, 3),
            "rss_mib_per_10min_second_half": round(_slope(later) * 600, 3) if len(later) >= 2 else None,
            "rss_mib_first_last": [round(rss[0], 1), round(rss[-1], 1)],
            "fds_min_max": [min(r[2] for r in rows), max(r[2] for r in rows)],
            "threads_min_max": [min(r[3] for r in rows), max(r[3] for r in rows)],
        }


def _slope(rows: list[tuple[float, float, int, int]]) -> float:
    """The least-squares slope of RSS (MiB) over time (s)."""
    times, rss = [r[0] for r in rows], [r[1] for r in rows]
    mean_t, mean_r = statistics.fmean(times), statistics.fmean(rss)
    spread = sum((t - mean_t) ** 2 for t in times) or 1.0
    return sum((t - mean_t) * (r - mean_r) for t, r in zip(times, rss, strict=True)) / spread


def processes(root: int) -> list[int]:
    return [root, *(p.pid for p in psutil.Process(root).children(recursive=True))]

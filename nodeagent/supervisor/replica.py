"""One model replica's engine process: resolve and validate the model, start, watch health, restart, stop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from llamafleet.core.errors import InvalidRequest, ModelFileInvalid, ModelNotFound
from nodeagent.cache.resolver import resolve
from nodeagent.domain import Phase, ReplicaError, ReplicaSpec, ReplicaState
from nodeagent.fit.gguf_header import GGUFHeader, read_header
from nodeagent.settings import SupervisorSettings

log = logging.getLogger(__name__)


def free_port(host: str, ports: tuple[int, int] | None = None) -> int:
    """A port nothing listens on: any (the kernel picks), or one in ``ports`` (first, last) when given."""
    candidates = (
        [0] if ports is None else random.sample(range(ports[0], ports[1] + 1), ports[1] - ports[0] + 1)
    )
    for candidate in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError(f"no free port in {ports[0]}-{ports[1]} on {host} for another engine")  # type: ignore[index]


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; True if stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


class EngineReplica:
    """Keeps one engine process serving ``spec`` until stopped; reports every change via ``on_change``."""

    def __init__(
        self,
        spec: ReplicaSpec,
        generation: int,
        settings: SupervisorSettings,
        on_change: Callable[[], None],
        on_restart: Callable[[str], None] = lambda _model: None,
    ) -> None:
        self.spec = spec
        self.stop = asyncio.Event()
        self._settings = settings
        self._on_change = on_change
        self._on_restart = on_restart
        self._state = ReplicaState(spec=spec, generation=generation)
        self._log_path = settings.data_dir / "logs" / f"{spec.replica_id}.log"

    @property
    def state(self) -> ReplicaState:
        return self._state

    def set_generation(self, generation: int) -> None:
        self._update(generation=generation)

    def _update(self, **changes: object) -> None:
        self._state = dataclasses.replace(self._state, **changes)  # type: ignore[arg-type]
        self._on_change()

    async def _validate(self) -> GGUFHeader | None:
        """Resolve and check the model file; a bad one is a permanent failure for this Assign."""
        try:
            path = await asyncio.to_thread(resolve, self.spec.source)
            return await asyncio.to_thread(read_header, path)
        except (ModelNotFound, InvalidRequest) as exc:
            self._fail(ReplicaError.MODEL_NOT_FOUND, exc.message)
        except ModelFileInvalid as exc:
            self._fail(ReplicaError.MODEL_INVALID, exc.message)
        return None

    def _fail(self, error: ReplicaError, message: str) -> None:
        log.error("replica %s (%s) failed: %s", self.spec.replica_id, self.spec.model, message)
        self._update(phase=Phase.FAILED, error=error, message=message, endpoint="", pid=0)

    async def run(self) -> None:
        header = await self._validate()
        if header is None:
            await self.stop.wait()
            return
        backoff = self._settings.restart_backoff_initial_s
        start_failures = 0
        while not self.stop.is_set():
            became_ready, reason = await self._run_once(header)
            if self.stop.is_set():
                break
            start_failures = 0 if became_ready else start_failures + 1
            if start_failures >= self._settings.max_start_failures:
                self._fail(
                    ReplicaError.ENGINE_START_FAILED,
                    f"engine failed to start {start_failures} times in a row; last: {reason}. "
                    f"Engine log: {self._log_path}",
                )
                await self.stop.wait()
                break
            self._on_restart(self.spec.model)
            log.warning("replica %s: %s; restarting in %.1fs", self.spec.replica_id, reason, backoff)
            self._update(
                phase=Phase.RESTARTING, endpoint="", pid=0, restarts=self._state.restarts + 1,
                error=ReplicaError.ENGINE_CRASHED, message=f"{reason}; restarting in {backoff:.0f}s",
            )  # fmt: skip
            if await _sleep_or_stop(self.stop, backoff):
                break
            backoff = self._settings.restart_backoff_initial_s if became_ready else backoff
            backoff = min(backoff * 2, self._settings.restart_backoff_max_s)
        self._update(phase=Phase.STOPPING, endpoint="")

    async def _run_once(self, header: GGUFHeader) -> tuple[bool, str]:
        """Start the engine; watch it until it dies, hangs or we stop. Returns (was ready, why it ended)."""
        host = self._settings.engine_bind_host
        port = free_port(host, self._settings.engine_port_range())
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        threads = self.spec.n_threads or self._settings.engine_threads
        args = [
            sys.executable, "-m", "nodeagent.engine",
            "--model-path", str(header.path), "--model-name", self.spec.model,
            "--host", host, "--port", str(port),
            "--context-length", str(self.spec.context_length),
            "--parallel-slots", str(self.spec.parallel_slots),
            "--n-gpu-layers", str(self.spec.n_gpu_layers),
            "--n-threads", str(threads),
            "--parent-pid", str(os.getpid()),
            *(["--embeddings"] if self.spec.embeddings else []),
            *(f for a in self.spec.adapters for f in ("--adapters", f"{a.name}={a.path}@{a.scale}")),
        ]  # fmt: skip
        with self._log_path.open("ab") as log_file:
            log_file.write(f"\n--- {time.strftime('%F %T')} starting: {' '.join(args)}\n".encode())
            log_file.flush()
            # Own session: a terminal's Ctrl-C reaches the agent, which then stops engines in order.
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdout=log_file,
                stderr=log_file,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        endpoint = f"http://{self._settings.advertise_host}:{port}"
        log.info(
            "replica %s: engine pid %d starting %s at %s",
            self.spec.replica_id,
            proc.pid,
            header.name,
            endpoint,
        )
        self._update(phase=Phase.STARTING, pid=proc.pid, endpoint=endpoint, message="loading model")
        try:
            return await self._watch(proc, f"http://{host}:{port}")
        finally:
            await self._terminate(proc)

    async def _watch(self, proc: asyncio.subprocess.Process, url: str) -> tuple[bool, str]:
        settings = self._settings
        ready = False
        misses = 0
        started = time.monotonic()
        exited = asyncio.ensure_future(proc.wait())
        try:
            async with httpx.AsyncClient(timeout=settings.health_timeout_s) as client:
                while not self.stop.is_set():
                    done, _ = await asyncio.wait({exited}, timeout=settings.health_interval_s)
                    if done or self.stop.is_set():
                        break
                    health = await _health(client, url)
                    healthy = health is not None
                    if health is not None:
                        adapters = tuple(health.get("adapters", ()))  # reported upstream when it changes
                        if adapters != self._state.adapters:
                            self._update(adapters=adapters)
                    if healthy and not ready:
                        ready = True
                        log.info(
                            "replica %s ready after %.1fs", self.spec.replica_id, time.monotonic() - started
                        )
                        self._update(phase=Phase.READY, error=ReplicaError.NONE, message="")
                    misses = 0 if healthy else misses + 1
                    if ready and misses >= settings.health_failures_to_restart:
                        return ready, f"engine stopped answering /health ({misses} checks)"
                    if not ready and time.monotonic() - started > settings.start_timeout_s:
                        return ready, f"engine not ready after {settings.start_timeout_s:.0f}s"
        finally:
            if not exited.done():
                exited.cancel()
        if self.stop.is_set():
            return ready, "stopped"
        code = proc.returncode
        how = (
            f"killed by {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exit code {code}"
        )
        tail = log_tail(self._log_path)
        return ready, f"engine exited ({how})" + (f": {tail}" if tail else "")

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), self._settings.stop_grace_s)
        except TimeoutError:
            log.warning(
                "engine pid %d ignored SIGTERM for %.0fs; killing it", proc.pid, self._settings.stop_grace_s
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def _health(client: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    """The engine's /health body when it is ready, else None."""
    try:
        response = await client.get(f"{url}/health")
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body
    except (httpx.HTTPError, ValueError):
        return None

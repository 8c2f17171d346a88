"""What every supervised process shares: start, watch health, restart with backoff, stop in order.

An engine (``replica.EngineReplica``) and an RPC worker (``rpc_worker.RpcWorker``) differ only in
how they are prepared, which command runs them, how their health is probed and what lives beside
them for their whole lifetime (an RPC worker's gate, a split head's tunnels); the subclasses say
that, and this class keeps the one restart policy both follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from llamafleet.contract.replica import ReplicaSpec
from nodeagent.cache.store import ModelStore
from nodeagent.domain import Phase, ReplicaError, ReplicaState
from nodeagent.rpc.tunnel import NodeCredentials
from nodeagent.settings import SupervisorSettings

log = logging.getLogger(__name__)
STARTING_CHECK_S = 0.2  # health checks while an engine loads (then health_interval_s)


def listening_socket(host: str, ports: tuple[int, int] | None = None) -> socket.socket:
    """A socket bound to a free port on ``host`` (any, or one in ``ports``) and listening: handed to a
    child process, so nothing can take the port between choosing it and serving on it."""
    candidates = (
        [0] if ports is None else random.sample(range(ports[0], ports[1] + 1), ports[1] - ports[0] + 1)
    )
    for candidate in candidates:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, candidate))
        except OSError:
            s.close()
            continue
        s.listen(2048)
        return s
    raise OSError(f"no free port in {ports[0]}-{ports[1]} on {host}")  # type: ignore[index]


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
    raise OSError(f"no free port in {ports[0]}-{ports[1]} on {host}")  # type: ignore[index]


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; True if stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


@dataclass(frozen=True)
class Launch:
    """One start of the process: its command line, what it advertises, and where its health is probed."""

    argv: list[str]
    endpoint: str  # reported upstream: an engine's URL, a worker gate's host:port
    probe: str  # an engine's local URL, a worker's local host:port
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # added to the agent's (secrets: not argv)
    listening: socket.socket | None = None  # bound here, inherited by the child, closed here once it runs


class SupervisedProcess:
    """Keeps one process serving ``spec`` until stopped; reports every change via ``on_change``."""

    kind = "process"  # for people: "engine", "RPC worker"
    drains = False  # serves requests that should finish: reported stopping, then given time (engines)

    def __init__(
        self,
        spec: ReplicaSpec,
        generation: int,
        settings: SupervisorSettings,
        on_change: Callable[[], None],
        on_restart: Callable[[str], None] = lambda _model: None,
        credentials: NodeCredentials | None = None,
        store: ModelStore | None = None,
        node_has_gpu: bool = False,
    ) -> None:
        self.spec = spec
        self._node_has_gpu = node_has_gpu
        self._store = store  # the node's model cache (engines fetch their model through it)
        self.stop = asyncio.Event()
        self._settings = settings
        self._credentials = credentials  # this node's certificate (layer splits' mutual TLS)
        self._on_change = on_change
        self._on_restart = on_restart
        self._state = ReplicaState(spec=spec, generation=generation)
        self._log_path = settings.data_dir / "logs" / f"{spec.replica_id}.log"
        # Its share of the node's CPUs: the supervisor sets it as replicas come and go (core.threads).
        self.threads = 1

    @property
    def gpu_mode(self) -> bool:
        """Every layer on a GPU: it needs a thread to feed the GPU, not a share of the cores."""
        return False

    @property
    def state(self) -> ReplicaState:
        return self._state

    def memory_to_come(self) -> int:
        """Host memory it may still take beyond what it holds now (an engine's prompt cache filling to
        its cap): the agent reports it as not free, so nothing else is placed into it."""
        return 0

    @property
    def pid(self) -> int:
        return self._state.pid

    def set_generation(self, generation: int) -> None:
        self._update(generation=generation)

    def _update(self, **changes: object) -> None:
        self._state = dataclasses.replace(self._state, **changes)  # type: ignore[arg-type]
        self._on_change()

    def _fail(self, error: ReplicaError, message: str) -> None:
        log.error("replica %s (%s) failed: %s", self.spec.replica_id, self.spec.model, message)
        self._update(phase=Phase.FAILED, error=error, message=message, endpoint="", pid=0)

    # --- what a subclass says --------------------------------------------------------------
    async def prepare(self) -> bool:
        """Check what the process needs before its first start; False: failed for good (``_fail`` said)."""
        return True

    async def precheck(self) -> str:
        """Before each start: why it cannot start now ('' when it can); counts as a failed start."""
        return ""

    def launch(self) -> Launch:
        raise NotImplementedError

    async def healthy(self, client: httpx.AsyncClient, probe: str, pid: int) -> bool:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def alongside(self) -> AsyncIterator[None]:
        """What runs beside the process for its whole supervised life, across restarts."""
        yield

    # --- the policy ------------------------------------------------------------------------
    async def run(self) -> None:
        if not await self.prepare():
            await self.stop.wait()
            return
        try:
            async with self.alongside():
                await self._keep_running()
        except OSError as exc:  # e.g. no free port for a gate or a tunnel
            self._fail(ReplicaError.ENGINE_START_FAILED, f"{self.kind} cannot start: {exc}")
            await self.stop.wait()
        self._update(phase=Phase.STOPPING, endpoint="")

    async def _keep_running(self) -> None:
        backoff = self._settings.restart_backoff_initial_s
        start_failures = 0
        while not self.stop.is_set():
            became_ready, reason = await self._run_once()
            if self.stop.is_set():
                break
            start_failures = 0 if became_ready else start_failures + 1
            if start_failures >= self._settings.max_start_failures:
                self._fail(
                    ReplicaError.ENGINE_START_FAILED,
                    f"{self.kind} failed to start {start_failures} times in a row; last: {reason}. "
                    f"Log: {self._log_path}",
                )
                await self.stop.wait()
                break
            self._on_restart(self.spec.model)
            log.warning("replica %s: %s; restarting in %.1fs", self.spec.replica_id, reason, backoff)
            self._update(
                phase=Phase.RESTARTING, endpoint="", pid=0, restarts=self._state.restarts + 1,
                error=ReplicaError.ENGINE_CRASHED, message=f"{reason}; restarting in {backoff:.0f}s",
            )  # fmt: skip
            if await sleep_or_stop(self.stop, backoff):
                break
            backoff = self._settings.restart_backoff_initial_s if became_ready else backoff
            backoff = min(backoff * 2, self._settings.restart_backoff_max_s)

    async def _run_once(self) -> tuple[bool, str]:
        """Start the process; watch it until it dies, hangs or we stop. Returns (was ready, why it ended)."""
        problem = await self.precheck()
        if problem:
            self._update(phase=Phase.STARTING, message=problem)
            return False, problem
        launch = self.launch()
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log_file:
            log_file.write(f"\n--- {time.strftime('%F %T')} starting: {' '.join(launch.argv)}\n".encode())
            log_file.flush()
            # Own session: a terminal's Ctrl-C reaches the agent, which then stops processes in order.
            try:
                proc = await asyncio.create_subprocess_exec(
                    *launch.argv,
                    stdout=log_file,
                    stderr=log_file,
                    stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, **launch.env} if launch.env else None,
                    pass_fds=(launch.listening.fileno(),) if launch.listening else (),
                )
            finally:
                if launch.listening is not None:
                    launch.listening.close()  # the child holds it now
        log.info("replica %s: %s pid %d starting at %s", self.spec.replica_id, self.kind, proc.pid,
                 launch.endpoint)  # fmt: skip
        self._update(phase=Phase.STARTING, pid=proc.pid, endpoint=launch.endpoint, message="starting")
        try:
            return await self._watch(proc, launch.probe)
        finally:
            if self.drains and self.stop.is_set() and proc.returncode is None:
                # Out of the routing table first (the endpoint stays: requests in flight finish), then
                # SIGTERM: the engine stops accepting and finishes what it has (docs/RELIABILITY.md).
                self._update(phase=Phase.STOPPING, message="draining")
                await asyncio.sleep(self._settings.drain_delay_s)
            await self._terminate(proc)

    async def _watch(self, proc: asyncio.subprocess.Process, probe: str) -> tuple[bool, str]:
        settings = self._settings
        ready = False
        misses = 0
        started = time.monotonic()
        exited = asyncio.ensure_future(proc.wait())
        stopped = asyncio.ensure_future(self.stop.wait())  # a stop is acted on at once, not at the next check
        try:
            async with httpx.AsyncClient(timeout=settings.health_timeout_s) as client:
                while not self.stop.is_set():
                    # Until ready, check often: a replica serves (and a scale from zero answers) as soon
                    # as its engine has loaded, not at the next regular check.
                    interval = (
                        settings.health_interval_s
                        if ready
                        else min(STARTING_CHECK_S, settings.health_interval_s)
                    )
                    await asyncio.wait({exited, stopped}, timeout=interval,
                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                    if exited.done() or self.stop.is_set():
                        break
                    healthy = await self.healthy(client, probe, proc.pid)
                    if healthy and not ready:
                        ready = True
                        log.info("replica %s: %s ready after %.1fs", self.spec.replica_id, self.kind,
                                 time.monotonic() - started)  # fmt: skip
                        self._update(phase=Phase.READY, error=ReplicaError.NONE, message="")
                    misses = 0 if healthy else misses + 1
                    if ready and misses >= settings.health_failures_to_restart:
                        return ready, f"{self.kind} stopped answering its health check ({misses} checks)"
                    if not ready and time.monotonic() - started > settings.start_timeout_s:
                        return ready, f"{self.kind} not ready after {settings.start_timeout_s:.0f}s"
        finally:
            for waiter in (exited, stopped):
                if not waiter.done():
                    waiter.cancel()
        if self.stop.is_set():
            return ready, "stopped"
        code = proc.returncode
        how = (
            f"killed by {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exit code {code}"
        )
        tail = log_tail(self._log_path)
        return ready, f"{self.kind} exited ({how})" + (f": {tail}" if tail else "")

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM until it runs
        try:
            await asyncio.wait_for(proc.wait(), self._settings.stop_grace_s)
        except TimeoutError:
            log.warning("%s pid %d ignored SIGTERM for %.0fs; killing it", self.kind, proc.pid,
                        self._settings.stop_grace_s)  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

"""Process lifecycle: a stop event set by SIGINT/SIGTERM, and a hard deadline for shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

Runner = Callable[[asyncio.Event], Awaitable[None]]
T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop where it exists (uvicorn[standard] brings it on Linux),
    else asyncio's loop. The engine runs on it: every token it streams crosses its loop, and on the
    cores llama.cpp computes on uvloop's smaller cost per callback is decode time given back (+8.5% for
    one SmolLM2 stream, docs/BENCHMARKS.md). The gateway, agent and control plane stay on asyncio's
    loop: no gain measured on the gateway's path, and their gRPC, TLS and subprocess code is tested
    there."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def install_stop_signals(stop: asyncio.Event) -> None:
    """First SIGINT/SIGTERM asks for a graceful stop; a second one means "now"."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting immediately", signal.Signals(signum).name)
            raise SystemExit(130)
        log.info("%s received: shutting down (send again to force)", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


async def wait_any(events: list[asyncio.Event], timeout_s: float) -> None:
    """Return when any of ``events`` is set, or after ``timeout_s`` (a loop's tick that can be woken)."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def first_known_error(exc: BaseException) -> BaseException | None:
    """The first error we raise on purpose (or an OSError) inside ``exc`` and its exception groups."""
    from llamafleet.core.errors import LlamafleetError

    if isinstance(exc, LlamafleetError | OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_known_error(inner)
            if found is not None:
                return found
    return None


async def run_until_stopped(runners: dict[str, Runner], stop: asyncio.Event, grace_seconds: float) -> None:
    """Run named long-lived parts in one TaskGroup until ``stop`` is set or one of them fails.

    Each runner must return soon after ``stop`` is set. If they have not all returned within
    ``grace_seconds`` of the stop, they are cancelled: the deadline is what keeps a pod inside
    its termination grace period.
    """

    async def guarded(name: str, runner: Runner) -> None:
        try:
            await runner(stop)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            known = first_known_error(exc)
            if known is not None:  # said in one line; main() prints it and exits non-zero
                log.error("%s: %s; stopping the process", name, getattr(known, "message", known))
            else:
                log.exception("%s failed; stopping the process", name)
            stop.set()
            raise

    async def deadline(group_tasks: list[asyncio.Task[None]]) -> None:
        await stop.wait()
        _, pending = await asyncio.wait(group_tasks, timeout=grace_seconds)
        for task in pending:
            log.warning("%s did not stop within %.0fs; cancelling it", task.get_name(), grace_seconds)
            task.cancel()

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(guarded(name, runner), name=name) for name, runner in runners.items()]
        watchdog = group.create_task(deadline(tasks), name="shutdown-deadline")
        await asyncio.wait(tasks)
        watchdog.cancel()

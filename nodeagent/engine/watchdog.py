"""Ends the engine when one decode step runs too long: llama.cpp's RPC has no socket timeouts.

A stopped RPC worker (SIGSTOP, a frozen host, a cut link without a reset) makes ``llama_decode``
wait forever inside native code, which Python cannot interrupt. The watchdog thread notices a step
older than ``timeout_s``, logs why, and exits the process with ``EXIT_DECODE_TIMEOUT``: the HTTP
connections close (clients get an error, not a hang) and the agent's supervisor reports the
replica lost and restarts it. (A killed worker makes llama.cpp abort the process by itself.)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

EXIT_DECODE_TIMEOUT = 4


def _exit(timeout_s: float) -> None:
    log.error("a decode step has run for over %.0fs (an RPC worker stopped answering?); exiting", timeout_s)
    logging.shutdown()
    os._exit(EXIT_DECODE_TIMEOUT)


class DecodeWatchdog:
    def __init__(self, timeout_s: float, on_expire: Callable[[float], None] = _exit) -> None:
        self._timeout_s = timeout_s
        self._on_expire = on_expire
        self._started: float | None = None  # when the running step began (None: no step running)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="decode-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def step_started(self) -> None:
        self._started = time.monotonic()

    def step_finished(self) -> None:
        self._started = None

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self._timeout_s / 4)):
            started = self._started
            if started is not None and time.monotonic() - started > self._timeout_s:
                self._on_expire(self._timeout_s)
                return

"""Logging set-up shared by every process: one line per event, with the component name."""

from __future__ import annotations

import logging
import sys


def configure(level: str = "INFO", component: str = "llamafleet") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)-7s {component} %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request access lines and HTTP client chatter drown out what matters.
    for noisy in ("uvicorn.access", "httpx", "httpcore", "grpc._cython"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

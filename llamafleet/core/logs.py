"""Logging set-up shared by every process: one line per event, with the component name."""

from __future__ import annotations

import logging
import sys
from urllib.parse import urlsplit


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


def shown_url(url: str) -> str:
    """What logs, errors and statuses show of a URL: scheme, host, port and path. Never its userinfo
    (``redis://:password@host``) or query (a presigned download's signature); anything not a URL as it is."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    hidden = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{hidden}"

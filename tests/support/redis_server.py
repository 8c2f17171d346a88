"""A real redis-server for tests, on a free port in a temporary directory (Debian's package)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import server_port


class RedisUrl(str):
    """A started Redis's URL, with the process that serves it (a test kills it by pid, never by name:
    other tests' Redis servers run beside it)."""

    pid: int
    port: int


@contextmanager
def redis_server(directory: Path, port: int = 0) -> Iterator[RedisUrl]:
    """Start redis-server (on ``port``, or a free one), yield its URL, stop it. `make test` installs the
    package when missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: run `make test` (it installs it) or apt-get install redis-server"
        )
    port = port or server_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
        url = RedisUrl(f"redis://127.0.0.1:{port}/0")
        url.pid, url.port = process.pid, port
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)

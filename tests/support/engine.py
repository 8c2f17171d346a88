"""Start a real engine process (``python -m nodeagent.engine``) on a free port and wait until it serves."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.child_env import child_env
from tests.support.ports import server_port
from tests.support.wait import wait_http_ok

REPO = Path(__file__).resolve().parents[2]


@dataclass
class EngineProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


@contextmanager
def running_engine(model: Path, log_dir: Path, *flags: str, name: str = "smollm2") -> Iterator[EngineProcess]:
    port = server_port()
    log_path = log_dir / f"engine-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "nodeagent.engine", "--model-path", str(model), "--model-name", name,
             "--port", str(port), *flags],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=child_env(),
        )  # fmt: skip
    engine = EngineProcess(f"http://127.0.0.1:{port}", process, log_path)

    try:
        wait_http_ok(process, f"{engine.url}/health", 60, "the engine", engine.log)
        yield engine
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

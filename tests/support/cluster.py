"""One embedded cluster (`llamafleet up`) in a subprocess, for tests and benchmarks: start it with a
models file, wait until the named models serve, stop it as a user would (SIGINT)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import oneshot
from tests.support.child_env import child_env
from tests.support.ports import server_port
from tests.support.processes import REPO, admin_cli, cluster_pki, grpc_port
from tests.support.wait import wait_until


@dataclass
class Cluster:
    base_url: str
    grpc: str
    process: subprocess.Popen[bytes]
    log_path: Path
    tmp: Path  # its PKI is in tmp/pki (tests.support.processes.cluster_pki)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def models_json(self) -> list[dict[str, object]]:
        import json

        out = subprocess.run(
            [sys.executable, "-m", "llamafleet.cli.main", "models", "--json", "--controlplane", self.grpc,
             *admin_cli(self.tmp)],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        result: list[dict[str, object]] = json.loads(out.stdout)
        return result


SHORT_INTERVALS = (
    "--agent-supervisor-restart-backoff-initial-s",
    "1",
    "--controlplane-status-interval-s",
    "1",
    # The only gateway shares the process and stops taking requests at the same Ctrl-C: the engines'
    # drain delay (for gateways elsewhere to drop them first) only makes every stop a second longer.
    "--agent-supervisor-drain-delay-s",
    "0.2",
)


def start_cluster(
    tmp: Path,
    models_yaml: str,
    ready_models: list[str],
    extra_args: tuple[str, ...] = (),
    api_key: str = "",
    preexec: Callable[[], object] | None = None,
    short_intervals: bool = True,
) -> Cluster:
    """``api_key``: the gateway requires it (--gateway-api-keys); the readiness poll sends it.
    ``preexec``: runs in the child before `llamafleet up` starts (e.g. joins a CPU-limited cgroup).
    ``short_intervals``: status every second and restarts after one, so tests wait less; False keeps
    every interval at its default (benchmarks of what users run)."""
    models = tmp / "models.yaml"
    models.write_text(models_yaml)
    port, grpc = server_port(), grpc_port()
    log_path = tmp / "cluster.log"
    env = child_env()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "llamafleet.cli.main", "up",
                "--controlplane-models", str(models),
                "--gateway-port", str(port), "--controlplane-grpc-port", str(grpc),
                "--controlplane-tls-dir", str(cluster_pki(tmp)),
                "--agent-node-id", "test-node",
                "--agent-supervisor-data-dir", str(tmp / "agent"),
                *(SHORT_INTERVALS if short_intervals else ()),
                *extra_args,
                *(("--gateway-api-keys", api_key) if api_key else ()),
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, preexec_fn=preexec,
        )  # fmt: skip
    cluster = Cluster(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc}", process, log_path, tmp)

    last_poll = ["no answer yet"]

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"llamafleet up exited with {process.returncode}:\n{cluster.log()}")
        try:
            auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            data = oneshot.get(f"{cluster.base_url}/v1/models", headers=auth, timeout=2).json()["data"]
        except (httpx.HTTPError, KeyError, ValueError) as e:
            last_poll[0] = f"{type(e).__name__}: {e}"
            return False
        ready_names = {m["id"] for m in data if m["llamafleet"]["ready_replicas"] > 0}
        last_poll[0] = f"ready: {sorted(ready_names)}"
        return set(ready_models) <= ready_names

    def why() -> str:
        return f"last poll of {cluster.base_url}/v1/models: {last_poll[0]}\n{cluster.log()[-6000:]}"

    try:
        wait_until(ready, 120, f"models {ready_models} to be ready", on_timeout=why)
    except BaseException:
        # Stopped here, not left to the garbage collector: a cluster that outlives its test takes the
        # machine's CPUs from the tests after it, and its Popen's ResourceWarning fails whichever test
        # is running when it is collected.
        process.kill()
        process.wait()
        raise
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    """Stop it as Ctrl-C does: it must exit 0 within 30 s, and its log hold no traceback (a problem is
    said in one line)."""
    cluster.process.send_signal(signal.SIGINT)
    try:
        cluster.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        cluster.process.kill()
        cluster.process.wait()
        raise AssertionError(f"llamafleet up did not stop within 30s of SIGINT:\n{cluster.log()}") from None
    log = cluster.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    assert cluster.process.returncode == 0, f"llamafleet up exited with {cluster.process.returncode}:\n{log}"


SMOLLM2_YAML = """
models:
  - name: smollm2-135m
    source: builtin:smollm2-135m
    contextLength: 1024
"""

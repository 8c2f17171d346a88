"""Shared fixtures: the real SmolLM2 GGUF, free ports, and a real embedded cluster in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from nodeagent.cache.resolver import builtin_path
from nodeagent.supervisor.process import free_port
from tests.support.processes import admin_cli, cluster_pki, grpc_port
from tests.support.secret_scan import leaks
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return builtin_path("smollm2-135m")


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
    port, grpc = free_port("127.0.0.1"), grpc_port()
    log_path = tmp / "cluster.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
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

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"llamafleet up exited with {process.returncode}:\n{cluster.log()}")
        try:
            auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            data = httpx.get(f"{cluster.base_url}/v1/models", headers=auth, timeout=2).json()["data"]
        except (httpx.HTTPError, KeyError, ValueError):
            return False
        ready_names = {m["id"] for m in data if m["llamafleet"]["ready_replicas"] > 0}
        return set(ready_models) <= ready_names

    wait_until(ready, 120, f"models {ready_models} to be ready")
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    cluster.process.send_signal(signal.SIGINT)
    try:
        cluster.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        cluster.process.kill()
        cluster.process.wait()
        raise AssertionError(f"llamafleet up did not stop within 30s of SIGINT:\n{cluster.log()}") from None


SMOLLM2_YAML = """
models:
  - name: smollm2-135m
    source: builtin:smollm2-135m
    contextLength: 1024
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = start_cluster(tmp_path, SMOLLM2_YAML, ["smollm2-135m"])
    yield running
    stop_cluster(running)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The log scan of the whole run (tests/support/secret_scan.py): a leak fails the run."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or session.config.option.collectonly:
        return
    try:
        base = factory.getbasetemp()
    except (OSError, ValueError):
        return
    problems = leaks(base)
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("secrets found in logs:\n  " + "\n  ".join(problems[:20]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- parallel workers (pytest-xdist, `make test`) ------------------------------------------------
# A module whose tests share a module-scoped fixture (a cluster started once) runs on one worker;
# other tests spread one by one. Tests that share machine-wide resources run one group at a time:
# the podman networks and images of tests/containers, and the network namespaces and bridges of the
# root-only tests.
MACHINE_WIDE = {
    "containers": ("tests/containers/",),
    "root": ("tests/integration/test_chart_cluster.py", "tests/faults/test_link_cut.py",
             "tests/integration/test_split_cluster.py"),
}  # fmt: skip


def _shares_a_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    return any(d.scope in ("module", "class", "package") for each in defs for d in each)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        group = next((g for g, prefixes in MACHINE_WIDE.items() if path.startswith(prefixes)), None)
        if group is None and _shares_a_fixture(item):
            group = path
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))

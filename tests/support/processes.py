"""llamafleet processes for multi-process tests: each one a real `llamafleet …` command with its own log."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import psutil

from controlplane.api.client import ClusterClient
from llamafleet.security.grpc_tls import ClientTls, CredentialFiles
from llamafleet.security.pki import init_pki
from nodeagent.supervisor.process import free_port
from tests.support import oneshot
from tests.support.child_env import child_env
from tests.support.ports import worker_share
from tests.support.wait import wait_http_ok, wait_until

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    name: str
    args: list[str]
    log_path: Path
    prefix: list[str] = field(default_factory=list)  # e.g. `ip netns exec NS`: another host's network
    env: dict[str, str] = field(default_factory=dict)  # added to the test's environment
    process: subprocess.Popen[bytes] = field(init=False)

    def start(self) -> Proc:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "llamafleet.cli.main", *self.args],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                env=child_env(**self.env),
            )  # fmt: skip
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.alive():
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout:.0f}s:\n{self.log()}") from None


class RunsProcess(Protocol):
    process: subprocess.Popen[bytes]


def engine_pids(agent: RunsProcess) -> dict[str, int]:
    """Engine processes an agent (or `llamafleet up`) runs: replica log name (model) → pid."""
    found = {}
    for child in psutil.Process(agent.process.pid).children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "nodeagent.engine" in cmd:
            found[cmd[cmd.index("--model-name") + 1] + f"#{child.pid}"] = child.pid
    return found


def ready(url: str) -> bool:
    try:
        return oneshot.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(proc: Proc, url: str, timeout: float = 60) -> None:
    wait_http_ok(proc.process, url, timeout, proc.name, proc.log)


def wait_listening(proc: Proc, address: str, timeout: float = 60) -> None:
    """Until ``proc`` accepts TCP connections on ``address`` (host:port): a gRPC server with no HTTP
    probe of its own, up before a test asks it anything."""
    host, _, port = address.rpartition(":")

    def accepts() -> bool:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited with {proc.process.returncode}:\n{proc.log()[-3000:]}")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return True
        except OSError:
            return False

    wait_until(accepts, timeout, f"{proc.name} to listen on {address}")


def role(url: str) -> str:
    """A control plane's role from its /readyz body: leader, follower, starting ("" when unreachable)."""
    try:
        return str(oneshot.get(url, timeout=1).json().get("role", ""))
    except (httpx.HTTPError, ValueError):
        return ""


def wait_leading(proc: Proc, url: str, timeout: float = 60) -> None:
    """Until the control plane at ``url`` serves as the leader; fail at once if it exits."""

    def leading() -> bool:
        if proc.process.poll() is not None:
            raise AssertionError(f"{proc.name} exited with {proc.process.returncode}:\n{proc.log()}")
        return role(url) == "leader" and ready(url)

    wait_until(leading, timeout, f"{proc.name} to lead", on_timeout=lambda: proc.log()[-3000:])


def cluster_pki(tmp: Path) -> Path:
    """The test's cluster PKI (CA, control plane certificate, bootstrap token, gateway and admin
    credentials), made once per test folder as a control plane's first start makes it."""
    folder = tmp / "pki"
    init_pki(folder)
    return folder


# Control-plane ports come from below Linux's ephemeral range (32768-60999 by default), where
# free_port()'s kernel-chosen ports never land: a port handed out next cannot be a join port (g + 1).
GRPC_PORTS = (20000, 29998)


def _worker_ports() -> tuple[int, int]:
    """This pytest-xdist worker's share of GRPC_PORTS: two workers never hand out the same port at once."""
    return worker_share(GRPC_PORTS, spare=1)


def grpc_port() -> int:
    """A free port for a control plane whose next port (its join port) is free too."""
    for _ in range(100):
        port = free_port("127.0.0.1", _worker_ports())
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise OSError("no free pair of ports")


def admin_client(address: str, tmp: Path) -> ClusterClient:
    """A ClusterClient holding the test PKI's admin credential."""
    return ClusterClient(address, ClientTls(CredentialFiles(cluster_pki(tmp) / "admin")))


def admin_cli(tmp: Path) -> list[str]:
    """`llamafleet nodes|models` flags for the test PKI's admin credential."""
    return ["--tls-dir", str(cluster_pki(tmp) / "admin")]


def kube_controlplane_args(
    kubeconfig: Path, grpc_port: int, http_port: int, identity: str, tmp: Path
) -> list[str]:
    """A control plane reading Model resources, with short grace periods for tests."""
    return [
        "controlplane", "--source", "kubernetes", "--kubernetes-kubeconfig", str(kubeconfig),
        "--tls-dir", str(cluster_pki(tmp)),
        "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--status-interval-s", "1",
        "--kubernetes-identity", identity, "--kubernetes-drain-grace-s", "20", "--settle-s", "5",
    ]  # fmt: skip


def controlplane_args(tmp: Path, grpc_port: int, *more: str) -> list[str]:
    """A control plane with the test PKI (mutual TLS; nodes join on grpc_port + 1)."""
    return ["controlplane", "--grpc-port", str(grpc_port), "--tls-dir", str(cluster_pki(tmp)), *more]


def agent_args(tmp: Path, controlplane: str, node: str = "node-a") -> list[str]:
    """An agent that joins with the test PKI's bootstrap token (its certificate kept in its data dir)."""
    pki = cluster_pki(tmp)
    return [
        "agent", "--node-id", node, "--uplink-controlplane", controlplane,
        "--uplink-ca", str(pki / "ca.crt"), "--uplink-bootstrap-token-file", str(pki / "bootstrap-token"),
        "--supervisor-data-dir", str(tmp / node), "--supervisor-restart-backoff-initial-s", "1",
        "--uplink-reconnect-backoff-max-s", "2",
    ]  # fmt: skip


def gateway_args(controlplane: str, port: int, tmp: Path) -> list[str]:
    return ["gateway", "--controlplane", controlplane, "--port", str(port),
            "--tls-dir", str(cluster_pki(tmp) / "gateway")]  # fmt: skip

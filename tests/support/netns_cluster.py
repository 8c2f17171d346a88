"""Several hosts on one machine running llamafleet: a control plane and a gateway in the root network
namespace, each agent in its own namespace with its own address on a bridge (tests/support/netns.py),
joining with the test PKI's bootstrap token; short timeouts for fault tests. For split and link tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from controlplane.domain import ModelStatusView, ReplicaRecord
from tests.support import netns
from tests.support.ports import server_port
from tests.support.processes import (
    Proc,
    admin_client,
    agent_args,
    controlplane_args,
    gateway_args,
    grpc_port,
    wait_listening,
    wait_ready,
)

DECODE_TIMEOUT_S = 5  # a split head's watchdog: a stopped worker ends its stream this long after


@dataclass
class NetnsCluster:
    grpc: str
    gateway_url: str
    agents: dict[str, Proc]
    hosts: dict[str, netns.Host]
    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def model(self, name: str) -> ModelStatusView | None:
        async def fetch() -> list[ModelStatusView]:
            client = admin_client(self.grpc, self.tmp)
            try:
                return await client.list_models()
            finally:
                await client.close()

        return next((m for m in asyncio.run(fetch()) if m.name == name), None)

    def replica(self, name: str) -> ReplicaRecord | None:
        view = self.model(name)
        return view.replicas[0] if view and view.replicas else None

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-4000:]}" for p in self.procs)

    def worker_pids(self) -> dict[str, int]:
        """RPC worker processes: node → pid."""
        found = {}
        for node, agent in self.agents.items():
            for child in psutil.Process(agent.process.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "nodeagent.rpc" in child.cmdline():
                        found[node] = child.pid
        return found


@contextlib.contextmanager
def netns_cluster(
    tmp: Path, model: str, source: Path, nodes: list[str], allocatable: str
) -> Iterator[NetnsCluster]:
    models = tmp / "models.yaml"
    models.write_text(
        f"models:\n  - name: {model}\n    source: {source}\n    contextLength: 512\n    parallelSlots: 1\n"
        # Nodes of a few hundred MiB (a split's reason to be): no room for a prompt cache on the head.
        "    threads: 1\n    allowSplit: true\n    cacheRam: 0\n"
    )
    port, gw_port = grpc_port(), server_port()
    with netns.network() as net:
        controlplane = Proc("controlplane", controlplane_args(
            tmp, port, "--models", str(models), "--grpc-host", "0.0.0.0",
            "--status-interval-s", "1", "--node-grace-s", "5", "--settle-s", "1",
        ), tmp / "controlplane.log").start()  # fmt: skip
        cluster = NetnsCluster(
            f"127.0.0.1:{port}", f"http://127.0.0.1:{gw_port}", {}, {}, tmp, [controlplane]
        )
        try:
            for node in nodes:
                host = net.add(node)
                args = [
                    *agent_args(tmp, f"{net.gateway}:{port}", node),  # joins: its certificate from the CA
                    "--allocatable-memory", allocatable, "--supervisor-advertise-host", host.address,
                    "--supervisor-engine-bind-host", host.address, "--supervisor-engine-threads", "1",
                    "--supervisor-rpc-decode-timeout-s", str(DECODE_TIMEOUT_S),
                    "--supervisor-health-interval-s", "0.5", "--supervisor-stop-grace-s", "3",
                    "--uplink-status-interval-s", "1",
                ]  # fmt: skip
                agent = Proc(node, args, tmp / f"{node}.log", prefix=host.command([])).start()
                cluster.agents[node], cluster.hosts[node] = agent, host
                cluster.procs.append(agent)
            gateway = Proc("gateway", gateway_args(cluster.grpc, gw_port, tmp), tmp / "gateway.log").start()
            cluster.procs.append(gateway)
            wait_ready(gateway, f"{cluster.gateway_url}/healthz")
            wait_listening(controlplane, cluster.grpc)  # tests ask it at once (a busy machine starts it late)
            yield cluster
        finally:
            for proc in reversed(cluster.procs):
                with contextlib.suppress(AssertionError):
                    proc.stop(timeout=30)

"""A process that cannot start says why in one line and exits non-zero: no traceback, no crash.

Before, a second `llamafleet up` printed uvicorn's traceback for the busy HTTP port and died with
a segmentation fault (exit 139)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.cluster import Cluster
from tests.support.ports import server_port
from tests.support.processes import cluster_pki, grpc_port

pytestmark = pytest.mark.integration


def up(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llamafleet.cli.main", "up", *flags],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_second_up_on_the_same_ports_says_which_port_and_exits_1(shared_cluster: Cluster) -> None:
    gateway_port = shared_cluster.base_url.rsplit(":", 1)[1]
    busy_grpc = shared_cluster.grpc.rsplit(":", 1)[1]
    for flags, says in (
        (("--gateway-port", gateway_port, "--controlplane-grpc-port", str(grpc_port())),
         f"cannot listen on 127.0.0.1:{gateway_port}: Address already in use"),
        (("--gateway-port", str(server_port()), "--controlplane-grpc-port", busy_grpc),
         f"cannot bind the control plane's gRPC port 127.0.0.1:{busy_grpc}"),
    ):  # fmt: skip
        done = up(*flags, "--controlplane-tls-dir", str(cluster_pki(shared_cluster.tmp)))
        assert done.returncode == 1, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("llamafleet: ")
        assert says in last

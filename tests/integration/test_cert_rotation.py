"""Certificates change without a restart and without dropping anything: the control plane's own
(replaced on disk, as cert-manager or a Secret update does) and a node's (renewed by its agent at 2/3
of its lifetime). The agent's stream and a streaming request in flight go on through both."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from llamafleet.security import pki
from tests.support import oneshot
from tests.support.process_cluster import MODEL, processes
from tests.support.processes import Proc, cluster_pki
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

VALIDITY_S = 24  # node certificates: renewed 16 s after they are issued


def served_serial(address: str, admin: Path) -> int:
    """The serial of the certificate the control plane presents to a new connection."""
    context = ssl.create_default_context(cafile=str(admin / "ca.crt"))
    context.load_cert_chain(str(admin / "tls.crt"), str(admin / "tls.key"))
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def serial_of(path: Path) -> int:
    return int(x509.load_pem_x509_certificate(path.read_bytes()).serial_number)


def test_rotated_certificates_are_used_without_dropping_streams_or_requests(tmp_path: Path) -> None:
    with processes(tmp_path, ("node-a",), "--node-cert-validity-s", str(VALIDITY_S)) as cluster:
        wait_until(lambda: bool(cluster.serving_on()), 120, "the replica to serve")
        folder = cluster_pki(tmp_path)
        agent_log = cluster.agents["node-a"].log
        identity = tmp_path / "node-a" / "identity" / "node-a" / "tls.crt"
        first_node_cert = serial_of(identity)
        before = served_serial(cluster.address, folder / "admin")
        assert before == serial_of(folder / "tls.crt")

        streamed: dict[str, object] = {}

        def stream() -> None:
            body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True,
                    "stream": True}  # fmt: skip
            with oneshot.stream("POST", f"{cluster.base}/v1/completions", json=body, timeout=120) as response:
                streamed["status"] = response.status_code
                streamed["lines"] = [line for line in response.iter_lines() if line]

        client = threading.Thread(target=stream)
        client.start()
        # The control plane's certificate is replaced on disk while the stream runs.
        authority = pki.Authority.load(folder)
        key = pki.new_key()
        renewed = authority.issue_server(key, ["localhost", "127.0.0.1"], datetime.timedelta(days=1))
        pki.write_credential(folder, pki.cert_pem(authority.cert), renewed, key)
        wait_until(lambda: served_serial(cluster.address, folder / "admin") == renewed.serial_number, 30,
                   "new connections to get the new certificate")  # fmt: skip
        # The node's certificate comes up for renewal and is renewed over the open stream.
        wait_until(lambda: "renewed this node's certificate" in agent_log(), VALIDITY_S * 2,
                   "the agent to renew its certificate", on_timeout=agent_log)  # fmt: skip
        assert serial_of(identity) != first_node_cert
        client.join(120)
        assert streamed["status"] == 200
        assert streamed["lines"][-1] == "data: [DONE]"  # type: ignore[index]
        since_connected = agent_log().split("connected to the control plane at", 1)[1]
        assert "connected to the control plane at" not in since_connected, "the agent's stream was dropped"
        assert "reconnecting" not in since_connected

        # The renewed certificate is the one the node uses from now on: a restarted control plane
        # takes it (and the engine goes on: adopted, not restarted).
        cluster.controlplane.stop()
        cluster.controlplane = Proc("controlplane-2", cluster.controlplane.args, tmp_path / "cp2.log").start()
        wait_until(lambda: agent_log().count("connected to the control plane at") == 2, 60,
                   "the agent to reconnect with its renewed certificate", on_timeout=agent_log)  # fmt: skip
        assert "node node-a connected" in cluster.controlplane.log()
        wait_until(lambda: cluster.ready_replicas() == 1, 60, "the replica to serve again")

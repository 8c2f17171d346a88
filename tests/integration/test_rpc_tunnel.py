"""The mutual-TLS tunnel in front of llama.cpp's RPC: the leased head's engine gets the same tokens through
it; another node's certificate, a certificate from another CA, or none never reach llama.cpp."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from llamafleet.security import pki
from nodeagent.rpc.tunnel import HeadTunnel, NodeCredentials, WorkerGate
from tests.support.certs import cluster_ca, node_credentials
from tests.support.engine import running_engine
from tests.support.ports import server_port
from tests.support.rpc import PROMPTS, greedy, rpc_worker, serving

pytestmark = pytest.mark.integration


async def knock(credentials: NodeCredentials | None, gate_port: int) -> None:
    """Open a TLS connection to the gate with these credentials (or none), hold it a moment, close it."""
    context = (
        ssl.create_default_context(cafile=str(credentials.ca))
        if credentials
        else ssl.create_default_context()
    )
    context.check_hostname = False
    if credentials:
        context.load_cert_chain(str(credentials.cert), str(credentials.key))
    else:
        context.verify_mode = ssl.CERT_NONE
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gate_port, ssl=context)
    except (OSError, ssl.SSLError):
        return
    try:
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.5)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def named_but_not_a_node(folder: Path, name: str) -> NodeCredentials:
    """A certificate from the cluster CA with CN ``name`` that is not a node's (no O llamafleet:node)."""
    authority = pki.Authority.load(folder)
    key = pki.new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = authority.issue(key.public_key(), subject, datetime.timedelta(hours=1), [], server=False)
    pki.write_private(folder / "plain.key", pki.key_pem(key))
    pki.write_private(folder / "plain.crt", pki.cert_pem(cert))
    return NodeCredentials(folder / "plain.crt", folder / "plain.key", folder / "ca.crt")


def test_only_the_leased_head_gets_through_and_tokens_are_unchanged(
    tmp_path: Path, smollm2_path: Path
) -> None:
    cluster_ca(tmp_path / "pki")
    head_node = node_credentials(tmp_path / "pki", "node-a")
    worker_node = node_credentials(tmp_path / "pki", "node-b")
    intruder = node_credentials(tmp_path / "pki", "node-c")
    foreign = node_credentials(tmp_path / "other", "node-a", cluster_ca(tmp_path / "other"))
    not_a_node = named_but_not_a_node(tmp_path / "pki", "node-a")  # the CA's, CN node-a, no node O
    gate_port, tunnel_port = server_port(), server_port()
    with running_engine(smollm2_path, tmp_path, "--n-threads", "1") as whole:
        expected = [greedy(whole.url, p) for p in PROMPTS]
    with rpc_worker(tmp_path) as (endpoint, _):
        host, port = endpoint.rsplit(":", 1)
        gate = WorkerGate(worker_node, (host, int(port)), leased_to="node-a")
        tunnel = HeadTunnel(head_node, ("127.0.0.1", gate_port), worker_node="node-b")
        with serving(gate, gate_port, tunnel, tunnel_port):
            for credentials in (intruder, foreign, not_a_node, None):
                asyncio.run(knock(credentials, gate_port))
            assert gate.refused == 2  # the cluster's certificates, but not the leased head node's
            assert (
                gate.forwarded == 0
            )  # nothing reached llama.cpp: the handshake or the name check stopped it
            asyncio.run(knock(head_node, gate_port))
            assert gate.forwarded == 1  # the same knock with the leased head's certificate goes through
            parts = f"127.0.0.1:{tunnel_port}=0-14"
            with running_engine(smollm2_path, tmp_path, "--n-threads", "1", "--rpc-parts", parts) as head:
                assert [greedy(head.url, p) for p in PROMPTS] == expected
            assert gate.forwarded > 1  # the head engine's own connections went through the gate

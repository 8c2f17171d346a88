"""Join and renew as a node agent does, over the real gRPC ports, keeping each credential in a folder."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from llamafleet.security import pki
from llamafleet.security.grpc_tls import ClientTls, CredentialFiles, server_only_channel
from protos.gen.llamafleet.agent.v1 import agent_pb2 as agent_pb
from protos.gen.llamafleet.agent.v1 import agent_pb2_grpc


def _keep(folder: Path, key: pki.Key, answer: agent_pb.NodeCredential) -> Path:
    folder.mkdir(parents=True)
    pki.write_private(folder / pki.KEY, pki.key_pem(key))
    pki.write_private(folder / pki.CERT, answer.certificate_pem)
    pki.write_private(folder / pki.CA_CERT, answer.ca_pem)
    return folder


async def join(
    address: str, pki_dir: Path, node: str, out: Path, token: str | None = None
) -> tuple[grpc.StatusCode, Path]:
    """Join as ``node`` at the join port ``address`` with a new key (the cluster's bootstrap token
    unless ``token``); the new credential's folder (under ``out``) on success."""
    token = token if token is not None else pki.read_tokens(pki_dir / pki.BOOTSTRAP_TOKEN)[0]
    key = pki.new_key()
    request = agent_pb.JoinRequest(node_id=node, bootstrap_token=token, csr_pem=pki.csr_for(node, key))
    folder = out / f"joined-{node}-{os.urandom(3).hex()}"
    async with server_only_channel(address, (pki_dir / pki.CA_CERT).read_bytes()) as channel:
        try:
            answer = await agent_pb2_grpc.JoinServiceStub(channel).Join(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), folder
    return grpc.StatusCode.OK, _keep(folder, key, answer)


async def renew(address: str, credential: Path, node: str, out: Path) -> tuple[grpc.StatusCode, Path]:
    """Renew over ``credential``'s mutual TLS at ``address`` with a new key, as an agent does."""
    key = pki.new_key()
    folder = out / f"renewed-{node}-{os.urandom(3).hex()}"
    async with ClientTls(CredentialFiles(credential)).channel(address) as channel:
        try:
            answer = await agent_pb2_grpc.AgentServiceStub(channel).Renew(
                agent_pb.RenewRequest(csr_pem=pki.csr_for(node, key)), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code(), folder
    return grpc.StatusCode.OK, _keep(folder, key, answer)

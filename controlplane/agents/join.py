"""Node identity: a node trades a bootstrap token for a certificate (Join), and renews it (Renew).

The token file and the CA are read on every call, so a rotated token or CA takes effect at once.
A bootstrap token lets its holder join as a node that is not connected; it can never displace a
connected node (that needs the node's own certificate). The certificate's name comes from the
control plane, never from the request's CSR, and the node's key never leaves the node.
"""

from __future__ import annotations

import datetime
import hmac
import logging
from pathlib import Path

import grpc

from controlplane.state.cluster import ClusterState
from llamafleet.core import pki
from llamafleet.core.grpc_tls import peer_identity
from protos.gen.llamafleet.agent.v1 import agent_pb2 as pb
from protos.gen.llamafleet.agent.v1 import agent_pb2_grpc

log = logging.getLogger(__name__)

RESERVED = {pki.CONTROLPLANE_NAME, "localhost"}


class Issuer:
    """Issues node certificates from the CA in ``folder``."""

    def __init__(self, folder: Path, validity_s: float) -> None:
        self.folder = folder
        self.validity = datetime.timedelta(seconds=validity_s)

    async def issue(
        self, context: grpc.aio.ServicerContext, node_id: str, csr_pem: bytes
    ) -> pb.NodeCredential:
        try:
            authority = pki.Authority.load(self.folder)
            cert = authority.issue_node(node_id, csr_pem, self.validity)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad certificate request: {exc}")
        except OSError as exc:
            log.error("cannot issue a certificate: CA in %s unreadable (%s)", self.folder, exc.strerror)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the control plane cannot reach its CA")
        return pb.NodeCredential(
            certificate_pem=pki.cert_pem(cert), ca_pem=(self.folder / pki.CA_CERT).read_bytes()
        )


class JoinServicer(agent_pb2_grpc.JoinServiceServicer):
    def __init__(self, state: ClusterState, issuer: Issuer) -> None:
        self._state = state
        self._issuer = issuer

    async def Join(  # noqa: N802 - the gRPC method name
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> pb.NodeCredential:
        node_id = request.node_id
        if not pki.NODE_ID.match(node_id) or node_id in RESERVED:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node id {node_id[:64]!r} is not a valid node name (lowercase letters, digits, '-', '.')",
            )
        if not self._token_accepted(request.bootstrap_token):
            log.warning(
                "refused a join as node %s from %s: bootstrap token not accepted", node_id, context.peer()
            )
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bootstrap token not accepted")
        node = self._state.nodes.get(node_id)
        if node is not None and node.connected:
            log.warning("refused a join as node %s from %s: that node is connected", node_id, context.peer())
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"node {node_id} is connected with its own certificate; a bootstrap token cannot take "
                "its name (give this agent another --node-id)",
            )
        credential = await self._issuer.issue(context, node_id, request.csr_pem)
        log.info("node %s joined from %s: certificate issued", node_id, context.peer())
        return credential

    def _token_accepted(self, offered: str) -> bool:
        path = self._issuer.folder / pki.BOOTSTRAP_TOKEN
        try:
            tokens = pki.read_tokens(path)
        except OSError:
            log.error("no bootstrap tokens: %s unreadable; nodes cannot join", path)
            return False
        given = offered.encode()
        return bool(offered) and any(hmac.compare_digest(given, t.encode()) for t in tokens)


async def renew(
    issuer: Issuer, request: pb.RenewRequest, context: grpc.aio.ServicerContext
) -> pb.NodeCredential:
    """A connected node's new certificate, named by the certificate it connects with."""
    identity = peer_identity(context)
    if identity is None:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this control plane runs without TLS")
    assert identity is not None
    if identity.role != "node":
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{identity} is not a node")
    credential = await issuer.issue(context, identity.name, request.csr_pem)
    log.info("node %s renewed its certificate", identity.name)
    return credential

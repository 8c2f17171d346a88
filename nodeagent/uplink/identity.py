"""This node's certificate: kept in its identity folder, got by joining, renewed before it expires.

A node without a certificate (its first start, or a new disk) joins: it makes a key that never
leaves the folder, sends a certificate request with the bootstrap token to the control plane's
join port (TLS that checks the control plane against the cluster CA), and keeps what comes back.
Later starts use the certificate; the token is read only to join. A folder that was supplied
(cert-manager, a Secret) is used as it is and re-read on every connection.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import grpc

from llamafleet.core.errors import JoinRefused
from llamafleet.security import pki
from llamafleet.security.grpc_tls import ClientTls, CredentialFiles, server_only_channel
from nodeagent.rpc.tunnel import NodeCredentials
from nodeagent.settings import AgentSettings
from protos.gen.llamafleet.agent.v1 import agent_pb2 as pb
from protos.gen.llamafleet.agent.v1 import agent_pb2_grpc

log = logging.getLogger(__name__)

RENEW_AT = 2 / 3  # of the certificate's lifetime
JOIN_TIMEOUT_S = 20.0
PERMANENT = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
}


class NodeIdentity:
    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings
        self.folder = settings.identity_dir()
        self.files = CredentialFiles(self.folder)

    def credentials(self) -> NodeCredentials:
        """For the layer splits' tunnels: read from the folder on every use, so a renewal counts."""
        return NodeCredentials(self.folder / pki.CERT, self.folder / pki.KEY, self.folder / pki.CA_CERT)

    def tls(self) -> ClientTls:
        return ClientTls(self.files)

    def _holds_certificate(self) -> bool:
        cert = self.folder / pki.CERT
        if not (cert.exists() and (self.folder / pki.KEY).exists()):
            return False
        identity = pki.identity_of_pem(cert.read_bytes())
        if identity == pki.Identity("node", self._settings.node_id):
            return True
        log.warning("%s is for %s, not node %s: joining again", cert, identity, self._settings.node_id)
        return False

    async def ensure(self) -> None:
        """Join unless the folder holds this node's certificate. JoinRefused when the control plane
        says no for good (a wrong token, a taken name); grpc errors when it cannot be reached."""
        if self._holds_certificate():
            return
        uplink = self._settings.uplink
        try:
            ca = uplink.ca.read_bytes()
        except OSError as exc:
            raise ConnectionError(
                f"cannot join: no cluster CA at {uplink.ca} ({exc.strerror}); copy the control plane's "
                "ca.crt there or give --uplink-ca"
            ) from None
        token = _first_line(uplink.bootstrap_token_file)
        key = pki.new_key()
        request = pb.JoinRequest(
            node_id=self._settings.node_id,
            bootstrap_token=token,
            csr_pem=pki.csr_for(self._settings.node_id, key),
        )
        address = uplink.join_address()
        async with server_only_channel(address, ca) as channel:
            try:
                credential = await agent_pb2_grpc.JoinServiceStub(channel).Join(
                    request, timeout=JOIN_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in PERMANENT:
                    node = self._settings.node_id
                    why = f"the control plane at {address} refused to let node {node} join: {exc.details()}"
                    raise JoinRefused(why) from None
                raise
        self._keep(key, credential)
        log.info("joined the cluster as node %s (certificate in %s)", self._settings.node_id, self.folder)

    def _keep(self, key: pki.Key, credential: pb.NodeCredential) -> None:
        try:
            pki.write_private(self.folder / pki.KEY, pki.key_pem(key))
            pki.write_private(self.folder / pki.CERT, credential.certificate_pem)
            pki.write_private(self.folder / pki.CA_CERT, credential.ca_pem)
        except OSError as exc:
            raise JoinRefused(
                f"cannot keep this node's certificate in {self.folder}: {exc.strerror}"
            ) from None

    def discard(self) -> None:
        """The control plane no longer accepts this certificate's key (the node renewed elsewhere, or
        an operator forgot it): set it aside as tls.crt.refused, so the next connection joins with the
        bootstrap token. A supplied, read-only folder is left to its supplier."""
        cert = self.folder / pki.CERT
        try:
            cert.replace(cert.with_name(f"{pki.CERT}.refused"))
        except OSError as exc:
            log.error("cannot set aside %s (%s): its supplier must replace it", cert, exc.strerror)
            return
        log.warning("this node's certificate is no longer accepted (kept as %s.refused); joining again "
                    "with the bootstrap token", cert)  # fmt: skip

    def renew_due(self) -> float:
        """Seconds until the certificate should be renewed (≤ 0: now)."""
        start, end = pki.validity((self.folder / pki.CERT).read_bytes())
        due = start + (end - start) * RENEW_AT
        return float((due - datetime.datetime.now(datetime.UTC)).total_seconds())

    async def renew(self, channel: grpc.aio.Channel) -> None:
        """A new key and certificate over the current (mutually authenticated) channel."""
        key = pki.new_key()
        request = pb.RenewRequest(csr_pem=pki.csr_for(self._settings.node_id, key))
        credential = await agent_pb2_grpc.AgentServiceStub(channel).Renew(request, timeout=JOIN_TIMEOUT_S)
        self._keep(key, credential)
        log.info("renewed this node's certificate (valid until %s)",
                 pki.not_after(credential.certificate_pem).isoformat(timespec="seconds"))  # fmt: skip


def _first_line(path: Path) -> str:
    try:
        tokens = pki.read_tokens(path)
    except OSError as exc:
        raise JoinRefused(
            f"this node has no certificate and no bootstrap token to join with: {path} ({exc.strerror}); "
            "give --uplink-bootstrap-token-file"
        ) from None
    if not tokens:
        raise JoinRefused(f"this node has no certificate and {path} holds no bootstrap token")
    return tokens[0]

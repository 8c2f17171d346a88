"""Node identity: a node trades a bootstrap token for a certificate (Join), and renews it (Renew).

The token file and the CA are read on every call, so a rotated token or CA takes effect at once.
A bootstrap token lets its holder join as a node id that is new (or that an operator forgot); it
can never take a known node's id (controlplane.state.node_keys.py). The certificate's name comes from
the control plane, never from the request's CSR, and the node's key never leaves the node. Joins
are rate-limited per peer address.
"""

from __future__ import annotations

import datetime
import hmac
import logging
import time
from pathlib import Path

import grpc

from controlplane.state.cluster import ClusterState
from controlplane.state.node_addresses import NodeFacts, NodeRefused, peer_host
from controlplane.state.node_keys import NodePins, cert_fingerprint, csr_fingerprint
from llamafleet.core.errors import LlamafleetError
from llamafleet.security import pki
from llamafleet.security.grpc_tls import peer_identity
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


class PeerRate:
    """A token bucket per peer address: ``per_minute`` calls a minute, a burst of as many."""

    def __init__(self, per_minute: float, peers_max: int = 10_000) -> None:
        self._rate = per_minute / 60.0
        self._burst = max(1.0, per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}  # peer → (tokens, at)
        self._peers_max = peers_max

    def allow(self, peer: str) -> bool:
        now = time.monotonic()
        tokens, at = self._buckets.get(peer, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if len(self._buckets) >= self._peers_max and peer not in self._buckets:
            self._buckets = {p: b for p, b in self._buckets.items() if now - b[1] < 60 / self._rate}
        if tokens < 1:
            self._buckets[peer] = (tokens, now)
            return False
        self._buckets[peer] = (tokens - 1, now)
        return True


async def _pins_or_unavailable(context: grpc.aio.ServicerContext, error: LlamafleetError) -> None:
    log.error("node keys: %s; node joins and renewals are refused until they can be written", error.message)
    await context.abort(grpc.StatusCode.UNAVAILABLE, "the control plane cannot keep node keys now; retry")


class JoinServicer(agent_pb2_grpc.JoinServiceServicer):
    def __init__(
        self, state: ClusterState, issuer: Issuer, pins: NodePins, rate_per_minute: float, facts: NodeFacts
    ) -> None:
        self._state = state
        self._issuer = issuer
        self._pins = pins
        self._rate = PeerRate(rate_per_minute)
        self._facts = facts  # in Kubernetes mode: only an existing Node's name joins

    async def Join(  # noqa: N802 - the gRPC method name
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> pb.NodeCredential:
        node_id = request.node_id
        if not self._rate.allow(peer_host(context.peer())):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many joins from this address; "
                                "retry in a few seconds")  # fmt: skip
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
        try:
            await self._facts.may_join(node_id)
        except NodeRefused as exc:
            log.warning("refused a join as node %s from %s: %s", node_id, context.peer(), exc.message)
            code = grpc.StatusCode.UNAVAILABLE if exc.retry else grpc.StatusCode.PERMISSION_DENIED
            await context.abort(code, exc.message)
        node = self._state.nodes.get(node_id)
        if node is not None and node.connected:
            log.warning("refused a join as node %s from %s: that node is connected", node_id, context.peer())
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"node {node_id} is connected with its own certificate; a bootstrap token cannot take "
                "its name (give this agent another --node-id)",
            )
        if not await self._pins.may_join(node_id):
            log.warning("refused a join as node %s from %s: that node id is known with another key",
                        node_id, context.peer())  # fmt: skip
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"node {node_id} is known with another key; if this is that node with a new disk, an "
                f"operator runs `llamafleet nodes forget {node_id}` first (else give this agent another "
                "--node-id)",
            )
        credential = await self._issuer.issue(context, node_id, request.csr_pem)
        try:
            await self._pins.joined(node_id, csr_fingerprint(request.csr_pem))
        except LlamafleetError as exc:
            await _pins_or_unavailable(context, exc)
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


def peer_key(context: grpc.aio.ServicerContext) -> str:
    """The fingerprint of the key in the peer's verified certificate."""
    return cert_fingerprint(context.auth_context()["x509_pem_cert"][0])


KEY_REFUSED = (
    "this certificate's key is no longer node {node}'s (the node renewed with another key, or an "
    "operator ran `llamafleet nodes forget {node}`): join again with the bootstrap token"
)


async def renew(
    issuer: Issuer, pins: NodePins, request: pb.RenewRequest, context: grpc.aio.ServicerContext
) -> pb.NodeCredential:
    """A connected node's new certificate, named by the certificate it connects with, for a key that
    becomes the node's pin once it connects."""
    identity = peer_identity(context)
    if identity is None:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this control plane runs without TLS")
    assert identity is not None
    if identity.role != "node":
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{identity} is not a node")
    credential = await issuer.issue(context, identity.name, request.csr_pem)
    try:
        accepted = await pins.renews(identity.name, peer_key(context), csr_fingerprint(request.csr_pem))
    except LlamafleetError as exc:
        await _pins_or_unavailable(context, exc)
    if not accepted:
        log.warning(
            "refused a renewal for node %s from %s: not the node's key", identity.name, context.peer()
        )
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, KEY_REFUSED.format(node=identity.name))
    log.info("node %s renewed its certificate", identity.name)
    return credential

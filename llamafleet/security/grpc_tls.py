"""TLS for every gRPC channel: credentials from files, re-read when they change, and who the peer is.

The control plane's server credentials are dynamic: gRPC asks for them on every new handshake and
we hand it new ones only when the files changed, so a rotated certificate (cert-manager, the
chart's Secret, ``llamafleet pki``) takes effect for new connections while open streams go on.
Clients read their files on every new channel, and check the control plane's certificate for
``CONTROLPLANE_NAME`` whatever address they dialled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from llamafleet.core.grpc_channels import CHANNEL_OPTIONS
from llamafleet.security import pki
from llamafleet.security.pki import CA_CERT, CERT, CONTROLPLANE_NAME, KEY, Identity, identity_of_pem

log = logging.getLogger(__name__)


class CredentialError(OSError):
    """A credential directory is missing a file or holds one that cannot be read."""


def _read(folder: Path, name: str) -> bytes:
    path = folder / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CredentialError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise CredentialError(f"{path} is empty")
    return data


@dataclass(frozen=True)
class CredentialFiles:
    """A credential directory: ca.crt (trusted CAs), tls.crt and tls.key (this process's own)."""

    folder: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) as they are on disk now."""
        return _read(self.folder, CA_CERT), _read(self.folder, CERT), _read(self.folder, KEY)

    def stamp(self) -> tuple[tuple[int, int], ...]:
        """Changes whenever one of the files is replaced or rewritten."""
        out = []
        for name in (CA_CERT, CERT, KEY):
            try:
                info = (self.folder / name).stat()
                out.append((info.st_mtime_ns, info.st_ino))
            except OSError:
                out.append((0, 0))
        return tuple(out)


def server_credentials(files: CredentialFiles, require_client_cert: bool) -> grpc.ServerCredentials:
    """Server TLS from ``files``, re-read on the first handshake after they change.

    ``require_client_cert``: the peer must present a certificate signed by a CA in ca.crt (agents,
    gateways, the CLI); without it only the server authenticates (the join port)."""
    ca, cert, key = files.read()
    stamp = [files.stamp()]

    def config(ca: bytes, cert: bytes, key: bytes) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        now = files.stamp()
        if now == stamp[0]:
            return None
        try:
            fresh = files.read()
            if not pki.key_matches(fresh[1], fresh[2]):  # caught between the key's and the cert's write
                return None
            configuration = config(*fresh)
        except (CredentialError, ValueError) as exc:
            log.warning("new TLS files in %s not usable yet (%s); keeping the old ones", files.folder, exc)
            return None
        stamp[0] = now
        log.info("TLS certificate in %s changed: new connections use the new one", files.folder)
        return configuration

    return grpc.dynamic_ssl_server_credentials(config(ca, cert, key), fetch, require_client_cert)


@dataclass(frozen=True)
class ClientTls:
    """A client's credential directory; None where a process runs with --insecure."""

    files: CredentialFiles

    def channel(self, address: str, options: list[tuple[str, int]] | None = None) -> grpc.aio.Channel:
        ca, cert, key = self.files.read()
        credentials = grpc.ssl_channel_credentials(ca, key, cert)
        return grpc.aio.secure_channel(address, credentials, options=_options(options))


def server_only_channel(address: str, ca: bytes) -> grpc.aio.Channel:
    """TLS that authenticates the control plane only: for a node that has no certificate yet."""
    return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca), options=_options(None))


def _options(options: list[tuple[str, int]] | None) -> list[tuple[str, int | str]]:
    return [*(options or CHANNEL_OPTIONS), ("grpc.ssl_target_name_override", CONTROLPLANE_NAME)]


def open_channel(address: str, tls: ClientTls | None) -> grpc.aio.Channel:
    """A channel to the control plane: TLS with this process's certificate, or plaintext (--insecure)."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return tls.channel(address)


def peer_identity(context: grpc.aio.ServicerContext) -> Identity | None:
    """Who the peer's verified certificate names; None on a plaintext server."""
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    pem = auth.get("x509_pem_cert")
    return identity_of_pem(pem[0]) if pem else Identity("", "")


async def authorize(context: grpc.aio.ServicerContext, *roles: str) -> Identity | None:
    """The peer's identity when it holds one of ``roles``; the call is aborted (PERMISSION_DENIED)
    when it does not. None on a plaintext (--insecure) server, where every caller is trusted."""
    identity = peer_identity(context)
    if identity is not None and identity.role not in roles:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED, f"{identity} may not call this (it needs: {', '.join(roles)})"
        )
    return identity

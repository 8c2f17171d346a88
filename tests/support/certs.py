"""A throwaway cluster CA and per-node certificates, made by the same code the control plane issues with."""

from __future__ import annotations

import datetime
from pathlib import Path

from llamafleet.security import pki
from nodeagent.rpc.tunnel import NodeCredentials


def cluster_ca(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = pki.new_ca("llamafleet-test-ca", days=1)
    pki.write_private(folder / pki.CA_CERT, pki.cert_pem(cert))
    pki.write_private(folder / pki.CA_KEY, pki.key_pem(key))
    return folder / pki.CA_CERT


def node_credentials(folder: Path, node: str, ca: Path | None = None) -> NodeCredentials:
    """A node certificate for ``node`` signed by the CA in ``folder`` (or by ``ca``, its key beside it)."""
    ca = ca or folder / pki.CA_CERT
    authority = pki.Authority.load(ca.parent)
    key = pki.new_key()
    cert = authority.issue_node(node, pki.csr_for(node, key), datetime.timedelta(days=1))
    key_path, cert_path = folder / f"{node}.key", folder / f"{node}.crt"
    pki.write_private(key_path, pki.key_pem(key))
    pki.write_private(cert_path, pki.cert_pem(cert))
    return NodeCredentials(cert_path, key_path, ca)

"""A throwaway cluster CA and per-node certificates (CN = node id), made with the openssl CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

from nodeagent.rpc.tunnel import NodeCredentials


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def cluster_ca(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "1", "-subj", "/CN=llamafleet-test-ca", "-keyout", str(folder / "ca.key"),
             "-out", str(folder / "ca.crt"))  # fmt: skip
    return folder / "ca.crt"


def node_credentials(folder: Path, node: str, ca: Path | None = None) -> NodeCredentials:
    """A certificate for ``node`` signed by the CA in ``folder`` (or by ``ca``'s own key beside it)."""
    ca = ca or folder / "ca.crt"
    key, csr, cert = folder / f"{node}.key", folder / f"{node}.csr", folder / f"{node}.crt"
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", f"/CN={node}", "-keyout", str(key), "-out", str(csr))  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca.with_suffix(".key")),
             "-CAcreateserial", "-days", "1", "-out", str(cert))  # fmt: skip
    return NodeCredentials(cert, key, ca)

"""The cluster's certificates: one CA, a server certificate for the control plane, one per node.

Who is who is written in the certificate, so any control plane holding the CA can check a peer
without keeping state (a failover loses nothing):

- a **node** (an agent): CN = node id, O = ``llamafleet:node``, a URI SAN
  ``spiffe://llamafleet/node/<id>`` and no DNS name, so a node's certificate can never pass for
  the control plane's;
- a **gateway** or an **admin** (the CLI): CN = ``llamafleet:gateway`` / ``llamafleet:admin``
  (``:`` is not allowed in a node id, and Helm's ``genSignedCert`` can write a CN but no O);
- the **control plane**: DNS SAN ``CONTROLPLANE_NAME``, which every client checks whatever
  address it dialled (a Service name, a pod IP, a bridge address in the tests).

A credential directory holds ``ca.crt`` (the trust bundle: one or more CAs), ``tls.crt`` and
``tls.key`` — the keys of a Kubernetes TLS Secret, so cert-manager can supply one as it is.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CONTROLPLANE_NAME = "controlplane.llamafleet"  # the DNS SAN clients check on the control plane
NODE_ORG = "llamafleet:node"
ROLE_PREFIX = "llamafleet:"  # CN of the non-node identities: llamafleet:gateway, llamafleet:admin
CA_CERT, CA_KEY, CERT, KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"
BOOTSTRAP_TOKEN = "bootstrap-token"
NODE_ID = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # a Kubernetes node name (DNS-1123)

Key = ec.EllipticCurvePrivateKey


def default_pki_dir() -> Path:
    """Where a control plane keeps (and on first start generates) its CA and credentials."""
    return Path.home() / ".cache" / "llamafleet" / "pki"


@dataclass(frozen=True)
class Identity:
    """Who a certificate says its holder is."""

    role: str  # node | gateway | admin | "" (not a llamafleet identity)
    name: str  # the node id for a node; the role otherwise

    def __str__(self) -> str:
        return f"node {self.name}" if self.role == "node" else self.role or "an unknown identity"


def identity_of(cert: x509.Certificate) -> Identity:
    cn = _attribute(cert.subject, NameOID.COMMON_NAME)
    if cn.startswith(ROLE_PREFIX) and cn[len(ROLE_PREFIX) :] in ("gateway", "admin"):
        return Identity(cn[len(ROLE_PREFIX) :], cn[len(ROLE_PREFIX) :])
    if _attribute(cert.subject, NameOID.ORGANIZATION_NAME) == NODE_ORG and NODE_ID.match(cn):
        return Identity("node", cn)
    return Identity("", cn)


def identity_of_pem(pem: bytes) -> Identity:
    return identity_of(x509.load_pem_x509_certificate(pem))


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def new_token() -> str:
    """A bootstrap token: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_ca(common_name: str = "llamafleet cluster CA", days: int = 3650) -> tuple[x509.Certificate, Key]:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


@dataclass(frozen=True)
class Authority:
    """The issuing CA (the first certificate of ``ca.crt`` and ``ca.key``)."""

    cert: x509.Certificate
    key: Key | rsa.RSAPrivateKey  # Helm's genCA makes RSA keys

    @classmethod
    def load(cls, folder: Path) -> Authority:
        cert = x509.load_pem_x509_certificates((folder / CA_CERT).read_bytes())[0]
        key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{folder / CA_KEY}: not an EC or RSA private key")
        return cls(cert, key)

    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        subject: x509.Name,
        validity: datetime.timedelta,
        sans: list[x509.GeneralName],
        server: bool,
    ) -> x509.Certificate:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        backdate = min(datetime.timedelta(minutes=5), validity / 10)  # clocks that run a little behind
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - backdate)
            .not_valid_after(min(_now() + validity, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(self._authority_key_id(), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def _authority_key_id(self) -> x509.AuthorityKeyIdentifier:
        """The CA's own key id when it has one (Helm's genCA and Go compute theirs differently from
        a hash of the key, and a mismatch breaks path building: "unable to get local issuer")."""
        try:
            ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def issue_node(self, node_id: str, csr_pem: bytes, validity: datetime.timedelta) -> x509.Certificate:
        """A node's certificate for the key in ``csr_pem``; its name comes from here, never from the CSR."""
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise ValueError("the certificate request's signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1 | ec.SECP384R1
        ):
            raise ValueError("the certificate request must carry an EC P-256 or P-384 public key")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_ORG)])  # fmt: skip
        uri = x509.UniformResourceIdentifier(f"spiffe://llamafleet/node/{node_id}")
        return self.issue(public_key, subject, validity, [uri], server=True)

    def issue_role(self, role: str, key: Key, validity: datetime.timedelta) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{ROLE_PREFIX}{role}")])
        return self.issue(key.public_key(), subject, validity, [], server=False)

    def issue_server(self, key: Key, names: list[str], validity: datetime.timedelta) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CONTROLPLANE_NAME)])
        return self.issue(
            key.public_key(), subject, validity, _sans([CONTROLPLANE_NAME, *names]), server=True
        )


def _sans(names: list[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    return sans


def csr_for(node_id: str, key: Key) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only, atomically (a reader sees the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_credential(folder: Path, ca_pem: bytes, cert: x509.Certificate, key: Key) -> None:
    """A credential directory (ca.crt, tls.crt, tls.key); the key is written before its certificate."""
    write_private(folder / KEY, key_pem(key))
    write_private(folder / CERT, cert_pem(cert))
    write_private(folder / CA_CERT, ca_pem)


YEAR = datetime.timedelta(days=365)


def init_pki(folder: Path, server_names: Sequence[str] = ()) -> bool:
    """Create the cluster's CA, the control plane's certificate, a bootstrap token and the gateway's
    and the CLI's credentials in ``folder`` unless its CA exists. True when it created them.

    Made in a temporary sibling and renamed into place, so two processes starting at once end with
    one complete set (the loser's is discarded)."""
    if (folder / CA_CERT).exists():
        return False
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    ca, ca_key = new_ca()
    authority = Authority(ca, ca_key)
    ca_pem = cert_pem(ca)
    write_private(staging / CA_CERT, ca_pem)
    write_private(staging / CA_KEY, key_pem(ca_key))
    server_key = new_key()
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), *server_names]
    write_credential(staging, ca_pem, authority.issue_server(server_key, names, YEAR), server_key)
    write_private(staging / BOOTSTRAP_TOKEN, (new_token() + "\n").encode())
    for role in ("gateway", "admin"):
        role_key = new_key()
        write_credential(staging / role, ca_pem, authority.issue_role(role, role_key, YEAR), role_key)
    try:
        os.rename(staging, folder)  # fails when folder exists (another process won, or it is a mount)
    except OSError:
        if (folder / CA_CERT).exists():
            _remove_tree(staging)
            return False
        folder.mkdir(parents=True, exist_ok=True)  # an existing empty directory: fill it in place
        for item in staging.iterdir():
            os.replace(item, folder / item.name)
        staging.rmdir()
    return True


def _remove_tree(folder: Path) -> None:
    for item in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        item.rmdir() if item.is_dir() else item.unlink()
    folder.rmdir()


def not_after(pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def key_matches(cert: bytes, key: bytes) -> bool:
    """Whether the private key in ``key`` belongs to the certificate in ``cert`` (both PEM)."""
    try:
        private = serialization.load_pem_private_key(key, password=None)
        public = x509.load_pem_x509_certificate(cert).public_key()
    except ValueError:
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        private.public_key().public_bytes(serialization.Encoding.DER, spki)
        == public.public_bytes(serialization.Encoding.DER, spki)
    )


def validity(pem: bytes) -> tuple[datetime.datetime, datetime.datetime]:
    cert = x509.load_pem_x509_certificate(pem)
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def read_tokens(path: Path) -> list[str]:
    """Bootstrap tokens in ``path``: one per line; blank lines and ``#`` comments skipped."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]

"""The cluster PKI: who a certificate names, what a CSR cannot choose, one set from racing starts."""

from __future__ import annotations

import datetime
import threading
from pathlib import Path

import pytest
from cryptography import x509

from llamafleet.security import pki

HOUR = datetime.timedelta(hours=1)


def test_a_node_certificate_is_named_by_the_issuer_never_by_the_request(tmp_path: Path) -> None:
    ca, key = pki.new_ca()
    authority = pki.Authority(ca, key)
    node_key = pki.new_key()
    cert = authority.issue_node("node-a", pki.csr_for("llamafleet:admin", node_key), HOUR)
    assert pki.identity_of(cert) == pki.Identity("node", "node-a")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == []  # never passes for the control plane
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://llamafleet/node/node-a"]
    assert pki.key_matches(pki.cert_pem(cert), pki.key_pem(node_key))
    assert not pki.key_matches(pki.cert_pem(cert), pki.key_pem(pki.new_key()))


def test_roles_come_from_the_common_name_and_anything_else_is_nobody() -> None:
    authority = pki.Authority(*pki.new_ca())
    for role in ("gateway", "admin"):
        cert = authority.issue_role(role, pki.new_key(), HOUR)
        assert pki.identity_of(cert) == pki.Identity(role, role)
    server = authority.issue_server(pki.new_key(), ["cp.example"], HOUR)
    assert pki.identity_of(server).role == ""  # the control plane's certificate is no client identity


def test_short_lived_certificates_are_backdated_by_a_tenth_at_most() -> None:
    authority = pki.Authority(*pki.new_ca())
    cert = authority.issue_node("n", pki.csr_for("n", pki.new_key()), datetime.timedelta(seconds=30))
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(seconds=30) <= lifetime <= datetime.timedelta(seconds=34)


def test_two_processes_generating_at_once_end_with_one_complete_set(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    created: list[bool] = []
    threads = [threading.Thread(target=lambda: created.append(pki.init_pki(folder))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(created) == [False, False, False, True]
    authority = pki.Authority.load(folder)
    for credential in (folder, folder / "gateway", folder / "admin"):
        cert = x509.load_pem_x509_certificate((credential / "tls.crt").read_bytes())
        cert.verify_directly_issued_by(authority.cert)
        assert pki.key_matches((credential / "tls.crt").read_bytes(), (credential / "tls.key").read_bytes())
        assert (credential / "tls.key").stat().st_mode & 0o077 == 0
    assert len(pki.read_tokens(folder / "bootstrap-token")[0]) >= 43
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pki.")]  # no staging left behind


def test_a_node_key_on_another_curve_is_refused() -> None:
    """Only P-256 and P-384: a weak or exotic curve in a CSR gets no certificate (issue 28)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    authority = pki.Authority(*pki.new_ca())
    assert authority.issue_node("n", pki.csr_for("n", ec.generate_private_key(ec.SECP384R1())), HOUR)
    for curve in (ec.SECP521R1(), ec.SECP256K1()):
        with pytest.raises(ValueError, match="P-256 or P-384"):
            authority.issue_node("n", pki.csr_for("n", ec.generate_private_key(curve)), HOUR)

"""After the whole test run: no bootstrap token, API key or private key in any process's log.

Every test's processes write their logs under pytest's base temporary folder, and every PKI the
tests made is there too (``pki/bootstrap-token``, ``*.key``, ``keys.yaml`` entries are hashes).
The scan reads the secrets from those files and looks for each in every ``*.log``; the security
tests add the keys and engine secrets they used (tests/integration/test_security.py).
"""

from __future__ import annotations

from pathlib import Path

MARKERS = ("PRIVATE KEY",)  # a PEM private key block in a log


def secrets_under(base: Path) -> set[str]:
    found: set[str] = set()
    for token_file in base.rglob("bootstrap-token"):
        found |= {line.strip() for line in token_file.read_text().splitlines() if line.strip()}
    for key_file in base.rglob("*.key"):
        lines = key_file.read_text(errors="replace").splitlines()
        found |= {line for line in lines if line and not line.startswith("-----") and len(line) >= 40}
    return found


def leaks(base: Path) -> list[str]:
    """'secret kind in file' for every secret found in a log under ``base``."""
    secrets = secrets_under(base)
    problems = []
    for log in base.rglob("*.log"):
        text = log.read_text(errors="replace")
        problems += [f"a private key or token in {log}" for s in secrets if s in text][:1]
        problems += [f"{marker!r} in {log}" for marker in MARKERS if marker in text]
    return problems

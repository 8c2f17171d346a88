"""Which key each node id holds: a node's identity beyond its certificate (docs/SECURITY.md, "Node keys").

A certificate proves only that the cluster CA signed it. The pin says which key *this* node id uses
now, so that:

- the bootstrap token joins new node ids only: a known id with another key needs an operator's
  ``llamafleet nodes forget NODE`` first (a new disk, a replaced machine);
- a renewal moves the pin to the new key once that key connects; the old certificate, and anyone
  who copied it, is refused from then on (its Connect and its Renew). If a thief renews first,
  the real node is refused and says so: an operator forgets the id and the node joins again;
- forgetting a node is immediate revocation: its stream ends, its certificate is refused.

A node connecting with a certificate and no pin (a cluster upgraded from before pins) is pinned to
that key. Pins are kept where a failover finds them: a file next to the CA (``--source file``) or a
ConfigMap in the control plane's namespace (``--source kubernetes``), one entry per node id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from llamafleet.core.errors import LlamafleetError

log = logging.getLogger(__name__)

FORGOTTEN = "forgotten"  # an entry an operator cleared: only a Join may set it again
# Beside the pins, the same store keeps which nodes an operator drained (`llamafleet nodes drain`), so a
# failover's new leader (or a restart) keeps draining them: keys no node id can be (ids have no "_").
CORDON_PREFIX = "cordoned_"


def key_fingerprint(public_key: object) -> str:
    """SHA-256 of the public key's SubjectPublicKeyInfo, hex."""
    der = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def cert_fingerprint(pem: bytes) -> str:
    return key_fingerprint(x509.load_pem_x509_certificate(pem).public_key())


def csr_fingerprint(pem: bytes) -> str:
    return key_fingerprint(x509.load_pem_x509_csr(pem).public_key())


@dataclass(frozen=True)
class Pin:
    key: str  # the key the node connects with; "" once forgotten
    pending: str = ""  # the key its last renewal was issued for, current once it connects

    def encode(self) -> str:
        if not self.key:
            return FORGOTTEN
        return f"{self.key} {self.pending}".strip()

    @classmethod
    def decode(cls, text: str) -> Pin:
        if text.strip() == FORGOTTEN:
            return cls("")
        key, _, pending = text.strip().partition(" ")
        return cls(key, pending.strip())


class PinStore(Protocol):
    """Where pins outlive this process: one entry per node id."""

    where: str

    async def load(self) -> dict[str, str]: ...

    async def put(self, node_id: str, value: str) -> None: ...


class PinStoreError(LlamafleetError):
    """The pins could not be read or written: node identity changes are refused until they can.
    Stores raise this or another LlamafleetError (the Kubernetes store: KubeError)."""

    code = "node_keys_unavailable"


class FilePinStore:
    """A JSON file (mode 0600), replaced atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    async def load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PinStoreError(f"cannot read the node keys in {self.path}: {exc}") from None
        return {str(k): str(v) for k, v in data.items()}

    async def put(self, node_id: str, value: str) -> None:
        entries = await self.load()
        entries[node_id] = value
        partial = self.path.with_name(f".{self.path.name}.partial")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(entries, out, indent=1, sort_keys=True)
            os.replace(partial, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise PinStoreError(f"cannot write the node keys to {self.path}: {exc.strerror}") from None


class NodePins:
    """The pins in memory, written through to a store before any change takes effect."""

    def __init__(self, store: PinStore) -> None:
        self._store = store
        self._pins: dict[str, Pin] = {}
        self._lock = asyncio.Lock()
        self.cordoned: set[str] = set()  # nodes drained on request, as the store keeps them

    async def load(self) -> None:
        entries = await self._store.load()
        self._pins = {
            node: Pin.decode(value) for node, value in entries.items() if not node.startswith(CORDON_PREFIX)
        }
        self.cordoned = {
            key.removeprefix(CORDON_PREFIX)
            for key, value in entries.items()
            if key.startswith(CORDON_PREFIX) and value == "true"
        }
        log.info("node keys: %d node(s) pinned (%s)", sum(1 for p in self._pins.values() if p.key),
                 self._store.where)  # fmt: skip

    def get(self, node_id: str) -> Pin | None:
        return self._pins.get(node_id)

    async def cordon(self, node_id: str, cordoned: bool) -> None:
        """Keep (or clear) a drain, before it takes effect."""
        async with self._lock:
            await self._store.put(CORDON_PREFIX + node_id, "true" if cordoned else "false")
            (self.cordoned.add if cordoned else self.cordoned.discard)(node_id)

    async def _set(self, node_id: str, pin: Pin) -> None:
        await self._store.put(node_id, pin.encode())
        self._pins[node_id] = pin

    async def may_join(self, node_id: str) -> bool:
        """Whether a bootstrap token may give ``node_id`` a certificate: it is new, or forgotten."""
        pin = self._pins.get(node_id)
        return pin is None or not pin.key

    async def joined(self, node_id: str, key: str) -> None:
        async with self._lock:
            await self._set(node_id, Pin(key))

    async def connects(self, node_id: str, key: str) -> bool:
        """Whether a certificate with ``key`` may act as ``node_id`` now (a renewal's key becomes the pin)."""
        async with self._lock:
            pin = self._pins.get(node_id)
            if pin is None:
                await self._set(node_id, Pin(key))
                log.info("node %s pinned to the key it connects with (it joined before node keys were kept)",
                         node_id)  # fmt: skip
                return True
            if pin.key and key == pin.pending:
                await self._set(node_id, Pin(key))
                return True
            return bool(pin.key) and key == pin.key

    async def renews(self, node_id: str, key: str, new_key: str) -> bool:
        """Record a renewal from a certificate with ``key`` for ``new_key``; False: that key is not
        the node's."""
        if not await self.connects(node_id, key):
            return False
        async with self._lock:
            await self._set(node_id, Pin(key, new_key))
            return True

    async def forget(self, node_id: str) -> bool:
        """Clear ``node_id``'s key: its certificates are refused, a bootstrap token may join it again.
        False when nothing was pinned."""
        async with self._lock:
            pin = self._pins.get(node_id)
            await self._set(node_id, Pin(""))
            return pin is not None and bool(pin.key)

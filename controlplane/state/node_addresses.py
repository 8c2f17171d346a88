"""What a node may claim about where it is reached (docs/SECURITY.md, "What a node reports").

A node's own reports are checked, not taken as sent: the address it advertises must be where it
connects from (or, in Kubernetes mode, its agent pod's IP), and every endpoint it reports for a
replica must be that address and a port in the cluster's engine (or RPC) port range. A node that
reports anything else cannot make gateways send prompts, or the admin views fetch, elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Protocol
from urllib.parse import urlsplit


class EndpointRefused(ValueError):
    """A replica endpoint that is not on its node's address, or not in the port range."""


def port_range(text: str) -> tuple[int, int] | None:
    """``FIRST-LAST`` (the agents' and the chart's format), or None for empty (any port)."""
    if not text:
        return None
    first, last = (int(p) for p in text.split("-"))
    return first, last


def peer_host(peer: str) -> str:
    """The address in a gRPC peer string ("ipv4:10.0.0.5:4242", "ipv6:[::1]:4242"), without the port."""
    address = peer.partition(":")[2] if peer.startswith(("ipv4:", "ipv6:")) else peer
    address = address.replace("%5B", "[").replace("%5D", "]")
    host = address.rpartition(":")[0] or address
    return host.strip("[]")


def _same_ip(a: str, b: str) -> bool:
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    if isinstance(x, ipaddress.IPv6Address) and x.ipv4_mapped is not None:
        x = x.ipv4_mapped
    if isinstance(y, ipaddress.IPv6Address) and y.ipv4_mapped is not None:
        y = y.ipv4_mapped
    return x == y


def advertised_from_peer(advertise_host: str, peer: str) -> bool:
    """Whether the node connects from the address it advertises (a name: any address it resolves to)."""
    host = peer_host(peer)
    if not advertise_host:
        return False
    if _same_ip(advertise_host, host):
        return True
    try:
        ipaddress.ip_address(advertise_host)
        return False
    except ValueError:
        pass
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(advertise_host, None)}
    except (OSError, UnicodeError):
        return False
    return any(_same_ip(str(address), host) for address in resolved)


def checked_endpoint(reported: str, host: str, ports: tuple[int, int] | None, *, http: bool) -> str:
    """``reported`` rebuilt from the node's address and its port: "http://HOST:PORT" (an engine) or
    "HOST:PORT" (an RPC worker's gate). EndpointRefused when it names another host, a port outside
    ``ports``, or carries anything else (credentials, a path, a query)."""
    if not reported:
        return ""
    parts = urlsplit(reported if http else f"tcp://{reported}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if (http and parts.scheme != "http") or port is None or parts.hostname is None:
        raise EndpointRefused(f"{reported[:200]!r} is not {'http://' if http else ''}HOST:PORT")
    if parts.username or parts.password or parts.path.strip("/") or parts.query or parts.fragment:
        raise EndpointRefused(f"{reported[:200]!r} carries more than a host and a port")
    if parts.hostname != host.strip("[]") and not _same_ip(parts.hostname, host.strip("[]")):
        raise EndpointRefused(f"{reported[:200]!r} is not on the node's address {host}")
    if ports is not None and not ports[0] <= port <= ports[1]:
        raise EndpointRefused(f"{reported[:200]!r}: port {port} is outside {ports[0]}-{ports[1]}")
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    return f"http://{shown}:{port}" if http else f"{shown}:{port}"


class NodeRefused(Exception):
    """A node's stream is refused for what it claims; ``retry``: the check could not be made now."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry


class NodeFacts(Protocol):
    """Decides what the control plane believes about a connecting node: the labels placement uses,
    and whether its advertised address is its own. Raises NodeRefused."""

    async def verify(
        self, node_id: str, advertise_host: str, labels: dict[str, str], peer: str
    ) -> dict[str, str]: ...

    async def may_join(self, node_id: str) -> None:
        """Raises NodeRefused when a bootstrap token may not join under ``node_id``."""


def loopback_refusal(node_id: str, advertise_host: str, peer: str) -> NodeRefused | None:
    """A node that advertises a loopback address while it connects from another host: gateways (on
    other machines) could never reach its engines. Refused whatever the address check says."""
    try:
        advertised = ipaddress.ip_address(advertise_host.strip("[]"))
        connecting = ipaddress.ip_address(peer_host(peer).strip("[]"))
    except ValueError:
        return None
    if not advertised.is_loopback or connecting.is_loopback:
        return None
    return NodeRefused(
        f"node {node_id} advertises {advertise_host}, a loopback address, but connects from {connecting}: "
        f"gateways on other machines could not reach its engines; start the agent with "
        f"--supervisor-advertise-host {connecting} --supervisor-engine-bind-host {connecting}"
    )


def address_refusal(node_id: str, advertise_host: str, peer: str) -> NodeRefused:
    return NodeRefused(
        f"node {node_id} advertises {advertise_host} but connects from {peer_host(peer)}: set "
        "--supervisor-advertise-host to the address the control plane sees, or, behind NAT or a proxy "
        "that hides it, start the control plane with --node-address-check off"
    )


class PeerFacts:
    """Outside Kubernetes: labels are the node's own (its certificate is the trust), and its address
    must be where it connects from unless the check is off."""

    def __init__(self, check: bool) -> None:
        self._check = check

    async def may_join(self, node_id: str) -> None:
        return None  # outside Kubernetes any valid name joins (the bootstrap token is the trust)

    async def verify(
        self, node_id: str, advertise_host: str, labels: dict[str, str], peer: str
    ) -> dict[str, str]:
        if (refused := loopback_refusal(node_id, advertise_host, peer)) is not None:
            raise refused
        if self._check and not advertised_from_peer(advertise_host, peer):
            raise address_refusal(node_id, advertise_host, peer)
        return labels

"""A NetworkPolicy enforced where a network namespace can enforce it: its ingress rules as iptables rules.

For a pod selected by a policy, every ingress rule becomes ACCEPTs for its peers' addresses (pods
matching its ``podSelector``; anyone when it has no ``from``) on its ports (``port``..``endPort``);
loopback and replies to the pod's own connections pass; every other TCP connection is reset, as a
CNI that implements NetworkPolicy would drop it. Only podSelector peers and TCP ports are
translated (what the chart uses); namespaceSelector and ipBlock peers are refused loudly.
"""

from __future__ import annotations

import subprocess
from typing import Any

from tests.support.netns import Host

Obj = dict[str, Any]


def _matches(selector: Obj, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def enforce(policy: Obj, host: Host, pods: list[tuple[dict[str, str], str]]) -> None:
    """Apply ``policy`` in ``host``'s namespace; ``pods`` are every pod's (labels, address)."""

    def iptables(*args: str) -> None:
        subprocess.run(host.command(["iptables", *args]), check=True, capture_output=True, text=True)

    iptables("-A", "INPUT", "-i", "lo", "-j", "ACCEPT")
    iptables("-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
    # Policies decide who may open a connection. Conntrack starts in this namespace only now, so a
    # connection the pod opened before (its gRPC stream) is picked up mid-stream, and a packet that
    # arrives first (a keepalive ping from the control plane) would look NEW and be reset: only SYNs
    # are judged below, as a CNI judges only new connections.
    iptables("-A", "INPUT", "-p", "tcp", "!", "--syn", "-j", "ACCEPT")
    for rule in policy["spec"].get("ingress", []):
        sources: list[str | None] = [None]
        if "from" in rule:
            sources = []
            for peer in rule["from"]:
                if set(peer) != {"podSelector"}:
                    raise AssertionError(f"only podSelector peers are translated, not {sorted(peer)}")
                sources += [address for labels, address in pods if _matches(peer["podSelector"], labels)]
        for port in rule.get("ports", []):
            if port.get("protocol", "TCP") != "TCP":
                raise AssertionError("only TCP ports are translated")
            span = f"{port['port']}:{port['endPort']}" if "endPort" in port else str(port["port"])
            for source in sources:
                iptables("-A", "INPUT", "-p", "tcp", *(("-s", source) if source else ()), "--dport", span,
                         "-j", "ACCEPT")  # fmt: skip
    iptables("-A", "INPUT", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")

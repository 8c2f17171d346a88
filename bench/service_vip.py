"""A Kubernetes Service's virtual IP as kube-proxy makes it in iptables mode, on this machine.

kube-proxy does not proxy: it writes NAT rules, one per endpoint, each taking a new connection with
probability 1/(endpoints left) (`-m statistic --mode random`), so connections spread over the pods
in the kernel and the Service costs nothing per request. This writes the same rules for a loopback
port in front of local servers: the baseline a platform team gets from a plain Service, with no
user-space proxy to slow it down. Needs root and iptables (`make netfilter`).

    with service_vip(18000, [18001, 18002]) as url:   # http://127.0.0.1:18000 → either server
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


def _iptables(*args: str, check: bool = True) -> None:
    subprocess.run(["iptables", "-w", "-t", "nat", *args], check=check, capture_output=True)


@contextmanager
def service_vip(port: int, backends: list[int]) -> Iterator[str]:
    """New TCP connections to 127.0.0.1:``port`` go to one of ``backends`` (loopback ports), at random
    with equal shares, as kube-proxy spreads a Service's connections."""
    if shutil.which("iptables") is None:
        raise RuntimeError("service_vip needs iptables (make netfilter) and root")
    chain = f"LF-SVC-{port}"
    jump = ["OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport", str(port), "-j", chain]
    _iptables("-N", chain)
    try:
        for i, backend in enumerate(backends):
            left = len(backends) - i
            pick = (
                ["-m", "statistic", "--mode", "random", "--probability", f"{1 / left:.10f}"]
                if left > 1
                else []
            )
            _iptables(
                "-A", chain, "-p", "tcp", *pick, "-j", "DNAT", "--to-destination", f"127.0.0.1:{backend}"
            )
        _iptables("-I", *jump)
        yield f"http://127.0.0.1:{port}"
    finally:
        _iptables("-D", *jump, check=False)
        _iptables("-F", chain, check=False)
        _iptables("-X", chain, check=False)

"""A Kubernetes Service's virtual IP as kube-proxy makes it in iptables mode, on this machine.

kube-proxy does not proxy: it writes NAT rules, one per endpoint, each taking a new connection with
probability 1/(endpoints left) (`-m statistic --mode random`), so connections spread over the pods
in the kernel and the Service costs nothing per request. This writes the same rules for a loopback
port in front of local servers: the baseline a platform team gets from a plain Service, with no
user-space proxy to slow it down. Needs root and iptables (`make netfilter`).

    with service_vip(18000, [18001, 18002]) as url:   # http://127.0.0.1:18000 → either server

The rules are the machine's, not the process's: a process killed before its ``finally`` (SIGKILL, a
benchmark stopped by hand) leaves them, and every later connection to that port goes to servers that
are gone, whatever listens there then (a test whose gateway got that port from ``free_port`` saw
nothing but refused connections). So each chain is named after its port and the process that made
it (``LF-SVC-<port>-<pid>``), ``sweep_stale_vips`` removes the chains of processes that are gone (run
before each new VIP, and by the test session), and while a VIP exists its port is held bound, so no
other process can be handed it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

CHAIN_PREFIX = "LF-SVC-"
# LF-SVC-<port> (before the owner was in the name: always stale now) or LF-SVC-<port>-<pid>.
_CHAIN = re.compile(rf"^-N ({re.escape(CHAIN_PREFIX)}(\d+)(?:-(\d+))?)$")


def _iptables(*args: str, check: bool = True) -> str:
    done = subprocess.run(["iptables", "-w", "-t", "nat", *args], check=check, capture_output=True, text=True)
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_chain(chain: str, rules: list[str]) -> None:
    for rule in rules:  # every jump to it (OUTPUT's), as `iptables -S` prints them
        if rule.startswith("-A ") and rule.endswith(f" -j {chain}"):
            _iptables("-D", *rule[3:].split(), check=False)
    _iptables("-F", chain, check=False)
    _iptables("-X", chain, check=False)


def sweep_stale_vips() -> list[str]:
    """Remove the VIP chains (and their jumps) of processes that are gone; return their names. A no-op
    without iptables or root."""
    if shutil.which("iptables") is None or os.geteuid() != 0:
        return []
    try:
        rules = _iptables("-S").splitlines()
    except subprocess.CalledProcessError:
        return []
    stale = []
    for rule in rules:
        match = _CHAIN.match(rule)
        if match and (match.group(3) is None or not _alive(int(match.group(3)))):
            stale.append(match.group(1))
    for chain in stale:
        _remove_chain(chain, rules)
    return stale


@contextmanager
def service_vip(port: int, backends: list[int]) -> Iterator[str]:
    """New TCP connections to 127.0.0.1:``port`` go to one of ``backends`` (loopback ports), at random
    with equal shares, as kube-proxy spreads a Service's connections."""
    if shutil.which("iptables") is None:
        raise RuntimeError("service_vip needs iptables (make netfilter) and root")
    sweep_stale_vips()
    # Held bound (never listening: the NAT rule takes every connection before it could) until the rules
    # go, so free_port cannot give the port to another process meanwhile.
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", port))
    chain = f"{CHAIN_PREFIX}{port}-{os.getpid()}"
    jump = ["OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport", str(port), "-j", chain]
    try:
        _iptables("-N", chain)
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
        held.close()

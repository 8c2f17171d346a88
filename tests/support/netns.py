"""Several hosts on one machine: network namespaces on a Linux bridge, each with its own address.

Needs root (CI runs as root here). Every host gets ``10.<net>.0.<n>/24`` on a veth into the
bridge, whose own address (``.1``) is the root namespace, where the test itself runs. Names a
host should resolve (Kubernetes Service names) go in ``/etc/netns/<ns>/hosts``, which
``ip netns exec`` mounts over ``/etc/hosts`` for every process started in that namespace.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    veth: str  # its link's end on the bridge: down cuts the host off, as a pulled cable would

    def cut(self) -> None:
        _ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        _ip("link", "set", self.veth, "up")

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's network namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass
class Network:
    tag: str
    bridge: str
    gateway: str  # the root namespace's address on the bridge
    prefix: str
    hosts: dict[str, Host] = field(default_factory=dict)

    def add(self, name: str) -> Host:
        index = len(self.hosts) + 2
        namespace = f"lf{self.tag}-{name}"[:15]
        veth, peer = f"lv{self.tag}{index}", f"lp{self.tag}{index}"
        _ip("netns", "add", namespace)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", namespace)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        address = f"{self.prefix}.{index}"
        setup = [
            ("addr", "add", f"{address}/24", "dev", peer),
            ("link", "set", peer, "up"),
            ("link", "set", "lo", "up"),
            ("route", "add", "default", "via", self.gateway),
        ]
        for args in setup:
            _ip("-n", namespace, *args)
        host = Host(name, namespace, address, veth)
        self.hosts[name] = host
        return host

    def resolve(self, names: dict[str, str]) -> None:
        """Make ``names`` (name → address) resolvable on every host, as cluster DNS would."""
        lines = ["127.0.0.1 localhost", *(f"{address} {name}" for name, address in names.items())]
        for host in self.hosts.values():
            folder = Path("/etc/netns") / host.namespace
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text("\n".join(lines) + "\n")


def available() -> str:
    """Why namespaces cannot be used here ('' when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return ""


@contextmanager
def network() -> Iterator[Network]:
    tag = f"{random.randrange(16**3):03x}"
    second = random.randrange(100, 250)
    prefix = f"10.{second}.0"
    net = Network(tag, f"lfbr{tag}", f"{prefix}.1", prefix)
    _ip("link", "add", net.bridge, "type", "bridge")
    _ip("addr", "add", f"{net.gateway}/24", "dev", net.bridge)
    _ip("link", "set", net.bridge, "up")
    try:
        yield net
    finally:
        for host in net.hosts.values():
            subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True)
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / host.namespace, ignore_errors=True)
        subprocess.run(["ip", "link", "del", net.bridge], capture_output=True)

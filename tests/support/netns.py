"""Several hosts on one machine: network namespaces on a Linux bridge, each with its own address.

Needs root (CI runs as root here). Every host gets ``10.<net>.0.<n>/24`` on a veth into the
bridge, whose own address (``.1``) is the root namespace, where the test itself runs; ``<net>`` is
one no interface here uses yet. The bridge's alias names the process that owns it, so a network
left behind by a killed run (SIGKILL skips the clean-up) is removed by the next one instead of
shadowing its subnet or its names. Names a
host should resolve (Kubernetes Service names) go in ``/etc/netns/<ns>/hosts``, which
``ip netns exec`` mounts over ``/etc/hosts`` for every process started in that namespace.
"""

from __future__ import annotations

import contextlib
import json
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


OWNER = "llamafleet-test-pid="  # a bridge's alias: the test process that made it


def _links() -> list[dict[str, object]]:
    out = subprocess.run(["ip", "-j", "-d", "addr", "show"], check=True, capture_output=True, text=True)
    return list(json.loads(out.stdout))


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_alive(link: dict[str, object]) -> bool:
    alias = str(link.get("ifalias", ""))
    return alias.startswith(OWNER) and alias[len(OWNER) :].isdigit() and _alive(int(alias[len(OWNER) :]))


def _delete_namespace(namespace: str) -> None:
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
    shutil.rmtree(Path("/etc/netns") / namespace, ignore_errors=True)


def reap_stale() -> list[str]:
    """Remove the bridges, veths and namespaces of test networks whose owning process is gone;
    returns what it removed. A network another live run owns is left alone."""
    links = _links()
    bridges = [link for link in links if str(link["ifname"]).startswith("lfbr")]
    live_tags = {str(link["ifname"])[4:] for link in bridges if _owner_alive(link)}
    removed = []
    for link in links:
        name = str(link["ifname"]).split("@")[0]
        for kind in ("lfbr", "lv"):
            if name.startswith(kind) and name[len(kind) : len(kind) + 3] not in live_tags:
                subprocess.run(["ip", "link", "del", name], capture_output=True)
                removed.append(name)
    for namespace in _namespaces():
        if namespace.startswith("lf") and "-" in namespace and namespace[2:5] not in live_tags:
            pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout
            if not pids.strip():
                _delete_namespace(namespace)
                removed.append(namespace)
    return removed


def _free_prefix(links: list[dict[str, object]]) -> str:
    used = set()
    for link in links:
        for info in link.get("addr_info", []) or []:  # type: ignore[union-attr]
            parts = str(info.get("local", "")).split(".")
            if len(parts) == 4 and parts[0] == "10":
                used.add(int(parts[1]))
    free = [second for second in range(100, 250) if second not in used]
    return f"10.{random.choice(free)}.0"


@contextmanager
def network() -> Iterator[Network]:
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        reap_stale()
    links = _links()
    taken = {str(link["ifname"])[4:7] for link in links} | {n[2:5] for n in _namespaces()}
    tag = next(t for t in (f"{random.randrange(16**3):03x}" for _ in range(1000)) if t not in taken)
    bridge = f"lfbr{tag}"
    _ip("link", "add", bridge, "type", "bridge")
    _ip("link", "set", "dev", bridge, "alias", f"{OWNER}{os.getpid()}")
    for attempt in range(5):  # another test's network (podman's, a worker's) may take the prefix meanwhile
        prefix = _free_prefix(_links())
        try:
            _ip("addr", "add", f"{prefix}.1/24", "dev", bridge)
            break
        except subprocess.CalledProcessError:
            if attempt == 4:
                subprocess.run(["ip", "link", "del", bridge], capture_output=True)
                raise
    net = Network(tag, bridge, f"{prefix}.1", prefix)
    _ip("link", "set", net.bridge, "up")
    try:
        yield net
    finally:
        for host in net.hosts.values():
            subprocess.run(["ip", "link", "del", host.veth], capture_output=True)
            _delete_namespace(host.namespace)
        subprocess.run(["ip", "link", "del", net.bridge], capture_output=True)

"""Run the chart's rendered workloads as local processes: what a kubelet would start, minus the container.

For each pod: the container's args after the image's entrypoint (``llamafleet``; ``redis-server``
for Redis), its env with ``fieldRef`` values filled from the pod (name, namespace, IP, node) and
``secretKeyRef`` values from the test's Secrets, ``$(VAR)`` expanded in args as Kubernetes does,
and each volume's mountPath replaced by a directory of the test (no mount namespaces here), a
Secret volume's directory holding the Secret's keys as files. Each pod runs in its own network
namespace (tests/support/netns.py) with its own address.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.netns import Host

Obj = dict[str, Any]

# What the official Redis image does differently from Debian's redis-server: protected mode off.
REDIS_IMAGE_DEFAULTS = ["--protected-mode", "no"]


@dataclass
class Pod:
    name: str
    workload: Obj
    host: Host
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def container(self) -> Obj:
        return dict(self.workload["spec"]["template"]["spec"]["containers"][0])

    def port(self, name_or_number: str | int) -> int:
        if isinstance(name_or_number, int):
            return name_or_number
        return next(int(p["containerPort"]) for p in self.container["ports"] if p["name"] == name_or_number)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def _env(pod: Pod, secrets: dict[str, dict[str, str]], namespace: str) -> dict[str, str]:
    fields = {"metadata.name": pod.name, "metadata.namespace": namespace, "status.podIP": pod.host.address,
              "spec.nodeName": pod.host.name}  # fmt: skip
    env: dict[str, str] = {}
    for item in pod.container.get("env", []):
        source = item.get("valueFrom") or {}
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "fieldRef" in source:
            env[item["name"]] = fields[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            raise AssertionError(f"{pod.name}: env {item['name']} has a source the test does not provide")
    return env


def _project(source: Obj, secrets: dict[str, dict[str, str]], directory: Path) -> None:
    """A Secret volume: each key (or each of ``items``) a file, as the kubelet writes them."""
    data = secrets[source["secretName"]]
    items = source.get("items") or [{"key": k, "path": k} for k in data]
    directory.mkdir(parents=True, exist_ok=True)
    for item in items:
        target = directory / item["path"]
        target.write_text(data[item["key"]])
        target.chmod(source.get("defaultMode", 0o644))


def rendered_secrets(objects: list[Obj]) -> dict[str, dict[str, str]]:
    """The Secrets a rendered chart creates (its generated PKI), by name, with their data decoded."""
    return {
        o["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in (o.get("data") or {}).items()}
        | dict(o.get("stringData") or {})
        for o in objects
        if o["kind"] == "Secret"
    }


def command(
    pod: Pod, secrets: dict[str, dict[str, str]], namespace: str, volumes: Path
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment the pod's container would run with."""
    env = _env(pod, secrets, namespace)
    mounts = {m["mountPath"]: volumes / pod.name / m["name"] for m in pod.container.get("volumeMounts", [])}
    for directory in mounts.values():
        directory.mkdir(parents=True, exist_ok=True)
    for volume in pod.workload["spec"]["template"]["spec"].get("volumes", []):
        if "secret" in volume:
            _project(volume["secret"], secrets, volumes / pod.name / volume["name"])

    def local(value: str) -> str:
        value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)
        for mount_path, directory in mounts.items():
            value = value.replace(mount_path, str(directory))
        return value

    args = [local(a) for a in pod.container.get("args", [])]
    env = {k: local(v) for k, v in env.items()}
    if pod.container["name"] == "redis":
        return ["redis-server", *args, *REDIS_IMAGE_DEFAULTS], env
    return [sys.executable, "-m", "llamafleet.cli.main", *args], env

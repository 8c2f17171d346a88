"""Run a rendered pod spec as podman containers, doing what a kubelet does with it.

For each pod: its init containers in order (each must exit 0), then its first container, detached,
in the image the spec names, with
- the pod's and the container's securityContext (tests/support/containers.py): user and group,
  fsGroup as a supplementary group, read-only root, capabilities, no-new-privileges;
- ``command`` as the entrypoint, ``args`` with ``$(VAR)`` expanded from the container's env as
  Kubernetes expands it; env values, ``fieldRef`` (name, namespace, pod IP, node name) and
  ``secretKeyRef`` from the test's Secrets;
- volumes as the kubelet makes them: a Secret as read-only files (owner root, group fsGroup, the
  volume's ``defaultMode``), ``emptyDir`` a fresh folder (0777, as the kubelet's), ``hostPath`` with
  ``DirectoryOrCreate`` created root:root 0755 when missing (fsGroup does not apply to it), a
  PersistentVolumeClaim a folder given to fsGroup (group-owned, setgid, group-writable) as the
  kubelet's volume ownership management does;
- ``resources.limits.memory`` as ``--memory``; a static address on the test's podman network
  (``status.podIP``), and Service names as host entries pointing at the pods they select (cluster
  DNS; this podman has no DNS plugin).

Not simulated: probes are run by the test, not by a kubelet (no restarts); no service-account
token is mounted (the control plane gets a kubeconfig for the API emulator instead); Services are
host entries, not virtual IPs (one pod per selected Service here).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import containers
from tests.support.containers import podman

Obj = dict[str, Any]


@dataclass
class PodRun:
    name: str  # the pod's (and its container's) name
    workload: Obj
    node: str
    address: str
    containers: list[str] = field(default_factory=list)  # every container started, init ones included

    @property
    def spec(self) -> Obj:
        return dict(self.workload["spec"]["template"]["spec"])

    @property
    def main(self) -> Obj:
        return dict(self.spec["containers"][0])

    @property
    def component(self) -> str:
        return str(self.workload["metadata"]["labels"]["app.kubernetes.io/component"])

    def port(self, name: str) -> int:
        return next(int(p["containerPort"]) for p in self.main["ports"] if p["name"] == name)

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr

    def running(self) -> bool:
        return (
            podman("inspect", "--format={{.State.Running}}", self.name, check=False).stdout.strip() == "true"
        )


def fs_group(pod: Obj) -> int | None:
    group = (pod.get("securityContext") or {}).get("fsGroup")
    return int(group) if group is not None else None


def make_volumes(
    run: PodRun, secrets: dict[str, dict[str, str]], root: Path, hostpaths: Path
) -> dict[str, Path]:
    """Each volume of the pod as a host folder, made as the kubelet makes it; by volume name."""
    group = fs_group(run.spec)
    folders: dict[str, Path] = {}
    for volume in run.spec.get("volumes", []):
        name = volume["name"]
        if "secret" in volume:
            source = volume["secret"]
            folder = root / run.name / name
            folder.mkdir(parents=True)
            data = secrets[source["secretName"]]
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                target = folder / item["path"]
                target.write_text(data[item["key"]])
                os.chown(target, 0, group if group is not None else 0)
                target.chmod(source.get("defaultMode", 0o644))
            folder.chmod(0o755)
        elif "emptyDir" in volume:
            folder = root / run.name / name
            folder.mkdir(parents=True)
            folder.chmod(0o777)
        elif "hostPath" in volume:
            # One host per node: the hostPath of node-a is the same folder for every pod on node-a.
            folder = hostpaths / run.node / volume["hostPath"]["path"].lstrip("/")
            if not folder.exists():
                if volume["hostPath"].get("type") != "DirectoryOrCreate":
                    raise AssertionError(
                        f"{run.name}: hostPath {folder} is missing and not DirectoryOrCreate"
                    )
                folder.mkdir(parents=True)
                os.chown(folder, 0, 0)
                folder.chmod(0o755)
        elif "persistentVolumeClaim" in volume:
            folder = hostpaths / "claims" / volume["persistentVolumeClaim"]["claimName"]
            folder.mkdir(parents=True, exist_ok=True)
            if group is not None:  # the kubelet's fsGroup ownership change, at every mount
                for path in [folder, *folder.rglob("*")]:
                    os.chown(path, path.stat().st_uid, group)
                    path.chmod(path.stat().st_mode | 0o060 | (0o2010 if path.is_dir() else 0))
        else:
            raise AssertionError(f"{run.name}: volume {name} has a kind this test does not make: {volume}")
        folders[name] = folder
    return folders


def environment(
    run: PodRun, container: Obj, secrets: dict[str, dict[str, str]], namespace: str
) -> dict[str, str]:
    fields = {"metadata.name": run.name, "metadata.namespace": namespace, "status.podIP": run.address,
              "spec.nodeName": run.node}  # fmt: skip
    env: dict[str, str] = {}
    for item in container.get("env", []):
        source = item.get("valueFrom") or {}
        if "value" in item:  # $(VAR) of a variable defined before it, as Kubernetes expands it
            env[item["name"]] = expand(str(item["value"]), env)
        elif "fieldRef" in source:
            env[item["name"]] = fields[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            raise AssertionError(f"{run.name}: env {item['name']} has a source the test does not provide")
    return env


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def podman_args(
    run: PodRun,
    container: Obj,
    volumes: dict[str, Path],
    secrets: dict[str, dict[str, str]],
    namespace: str,
    network: str,
    hosts: dict[str, str],
) -> list[str]:
    env = environment(run, container, secrets, namespace)
    args = [f"--label={containers.LABEL}", "--init", f"--network={network}", f"--ip={run.address}",
            f"--hostname={run.name}", *containers.security_args(run.spec, container)]  # fmt: skip
    args += [f"--add-host={name}:{address}" for name, address in hosts.items()]
    args += [f"--env={k}={v}" for k, v in env.items()]
    for mount in container.get("volumeMounts", []):
        mode = "ro" if mount.get("readOnly") else "rw"
        args.append(f"--volume={volumes[mount['name']]}:{mount['mountPath']}:{mode}")
    memory = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if memory:
        args.append(f"--memory={str(memory).replace('Gi', 'g').replace('Mi', 'm')}")
    command = [expand(c, env) for c in container.get("command", [])]
    if command:
        args.append(f"--entrypoint={command[0]}")
    args.append(container["image"])
    return [*args, *command[1:], *(expand(a, env) for a in container.get("args", []))]


def start(
    run: PodRun,
    secrets: dict[str, dict[str, str]],
    namespace: str,
    network: str,
    hosts: dict[str, str],
    folders: Path,
    extra_args: list[str] | None = None,
    mounts: dict[str, Path] | None = None,
) -> None:
    """The pod's init containers to completion, then its container, detached (named after the pod).

    ``extra_args`` go after the container's own args; ``mounts`` adds host files (mountPath → host path),
    read-only: what the test gives a pod that Kubernetes would (a service-account kubeconfig)."""
    volumes = make_volumes(run, secrets, folders / "volumes", folders / "hosts")
    for init in run.spec.get("initContainers", []):
        name = f"{run.name}-init-{init['name']}"
        run.containers.append(name)
        args = podman_args(run, init, volumes, secrets, namespace, network, {})
        result = podman("run", f"--name={name}", *args, check=False)
        if result.returncode != 0:
            raise AssertionError(f"{run.name}: init container {init['name']} failed: {result.stderr[-2000:]}")
    args = podman_args(run, run.main, volumes, secrets, namespace, network, hosts)
    image_at = args.index(run.main["image"])
    extra_mounts = [f"--volume={path}:{target}:ro" for target, path in (mounts or {}).items()]
    args = [*args[:image_at], *extra_mounts, *args[image_at:], *(extra_args or [])]
    run.containers.append(run.name)
    podman("run", "--detach", f"--name={run.name}", *args)

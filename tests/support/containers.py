"""Real containers for the tests, with podman: the image `make test` builds (``make image``), run
with the security context, volumes and users a pod spec gives it.

``LLAMAFLEET_TEST_IMAGE`` names the image (set by ``make test``); without it the container tests are
skipped with a reason (a bare ``pytest`` on a machine without podman). Podman runs rootful here, with
runc and cgroupfs (tools/containers.sh); every container gets ``--init``: a Python PID 1 ignores
SIGTERM, as it would in a pod without ``shareProcessNamespace``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

IMAGE_ENV = "LLAMAFLEET_TEST_IMAGE"
LABEL = "io.llamafleet.test"  # every container, volume and network a test makes; removed after it


def image() -> str:
    """The image under test, checked to exist; skips when none was named."""
    name = os.environ.get(IMAGE_ENV, "")
    if not name:
        pytest.skip(f"{IMAGE_ENV} is not set: `make test` builds the image and sets it")
    if shutil.which("podman") is None:
        pytest.fail(f"{IMAGE_ENV}={name} but podman is missing: run `make containers`")
    if podman("image", "exists", name, check=False).returncode != 0:
        pytest.fail(f"{IMAGE_ENV}={name} but no such image: run `make image IMAGE={name}`")
    return name


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        command = " ".join(args[:4])
        raise AssertionError(f"podman {command} … failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def security_args(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """A pod's and a container's securityContext as podman flags (the container's wins, as in Kubernetes)."""
    merged = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
    args = []
    if "runAsUser" in merged:
        args.append(f"--user={merged['runAsUser']}:{merged.get('runAsGroup', merged['runAsUser'])}")
    if merged.get("runAsNonRoot") and merged.get("runAsUser", 1) == 0:
        raise AssertionError(f"{container['name']}: runAsNonRoot with runAsUser 0 would not start")
    if "fsGroup" in merged:
        args.append(f"--group-add={merged['fsGroup']}")
    for group in merged.get("supplementalGroups", []):
        args.append(f"--group-add={group}")
    if merged.get("readOnlyRootFilesystem"):  # and no writable /tmp, /run unless a volume says so
        args += ["--read-only", "--read-only-tmpfs=false"]
    capabilities = merged.get("capabilities") or {}
    args += [f"--cap-drop={c}" for c in capabilities.get("drop", [])]
    args += [f"--cap-add={c}" for c in capabilities.get("add", [])]
    if merged.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    if merged.get("privileged"):
        raise AssertionError(f"{container['name']}: privileged containers are not what this chart runs")
    return args


@contextmanager
def network(subnet: str) -> Iterator[str]:
    """A podman bridge network for one test, removed with every container on it."""
    name = f"llamafleet-test-{uuid.uuid4().hex[:8]}"
    podman("network", "create", f"--label={LABEL}", f"--subnet={subnet}", name)
    try:
        yield name
    finally:
        podman("network", "rm", "--force", name, check=False)


def remove(*names: str) -> None:
    if names:
        podman("rm", "--force", "--time=10", *names, check=False, timeout=120)

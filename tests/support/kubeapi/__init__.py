"""A Kubernetes API server emulator (real HTTP, in-memory), and helpers to run it and point kubectl at it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import oneshot
from tests.support.wait import wait_http_ok

REPO = Path(__file__).resolve().parents[3]
CRD_FILE = REPO / "deploy" / "helm" / "llamafleet" / "crds" / "models.llamafleet.io.yaml"


@dataclass
class KubeApi:
    url: str
    kubeconfig: Path
    process: subprocess.Popen[bytes]

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against the emulator."""
        if shutil.which("kubectl") is None:
            raise AssertionError("kubectl is not installed: the Kubernetes tests drive the real client")
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def create_pod(
        self, name: str, labels: dict[str, str], namespace: str = "default", node: str = "", ip: str = ""
    ) -> None:
        """A Pod object as a Deployment's ReplicaSet would create it (nothing runs it: the test starts the
        process), so that labels on it can be set and read; with ``node`` and ``ip``, as the scheduler
        and the kubelet fill them in once it runs."""
        body: dict[str, object] = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "llamafleet:dev"}],
                     **({"nodeName": node} if node else {})},
        }  # fmt: skip
        if ip:
            body["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
        response = oneshot.post(f"{self.url}/api/v1/namespaces/{namespace}/pods", json=body, timeout=10)
        response.raise_for_status()

    def create_node(self, name: str, labels: dict[str, str]) -> None:
        """A Node object as a kubelet registers it (labels only: nothing runs on it)."""
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
        oneshot.post(f"{self.url}/api/v1/nodes", json=body, timeout=10).raise_for_status()

    def pod_labels(self, name: str, namespace: str = "default") -> dict[str, str]:
        response = oneshot.get(f"{self.url}/api/v1/namespaces/{namespace}/pods/{name}", timeout=10)
        if response.status_code == 404:
            return {}
        response.raise_for_status()
        labels: dict[str, str] = response.json()["metadata"].get("labels") or {}
        return labels

    def control(self, verb: str, **params: float) -> dict[str, object]:
        """The emulator's test controls: break-watches (hold_s), compact, writes, reset-writes."""
        method = "GET" if verb == "writes" else "POST"
        url = f"{self.url}/emulator/{verb}"
        data: dict[str, object] = oneshot.request(method, url, params=params, timeout=10).json()
        return data


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: emulator, cluster: {{server: "{url}"}}}}]
users: [{{name: tester, user: {{token: emulator-accepts-anything}}}}]
contexts: [{{name: emulator, context: {{cluster: emulator, user: tester, namespace: {namespace}}}}}]
current-context: emulator
"""
    )
    return path


@contextmanager
def kube_api(
    tmp: Path, port: int, crds: tuple[Path, ...] = (CRD_FILE,), history: int = 50_000, host: str = "127.0.0.1"
) -> Iterator[KubeApi]:
    """Start the emulator as its own process on loopback; yield it with a kubeconfig for it."""
    log = (tmp / "kubeapi.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.kubeapi",
            "--port",
            str(port),
            "--history",
            str(history),
            "--host",
            host,
            *(a for crd in crds for a in ("--crd", str(crd))),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    url = f"http://127.0.0.1:{port}"

    try:
        wait_http_ok(process, f"{url}/readyz", 20, "the Kubernetes API emulator",
                     lambda: (tmp / "kubeapi.log").read_text())  # fmt: skip
        yield KubeApi(url, write_kubeconfig(tmp / "kubeconfig", url), process)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()

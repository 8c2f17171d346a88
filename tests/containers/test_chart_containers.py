"""The chart's pods as real containers: the rendered control plane, gateway and two agents (two nodes)
run in the image `make image` built, each under exactly its pod spec's security context, env, Secrets,
volumes and memory limits (tests/support/pod_containers.py), on a podman network where Service names
resolve to the pods they select; the control plane on the Kubernetes API emulator. `kubectl apply` of
the README's Model → Ready → the openai client chats through the gateway's Service port → delete."""

from __future__ import annotations

import random
import secrets as random_tokens
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from controlplane.operator.leader import LEADER_LABEL
from tests.support import containers, oneshot
from tests.support.chart_pods import rendered_secrets
from tests.support.kubeapi import CRD_FILE, KubeApi, kube_api, write_kubeconfig
from tests.support.pod_containers import PodRun, start
from tests.support.ports import server_port
from tests.support.service import Backend, Service
from tests.support.wait import wait_until
from tests.unit.deploy.test_chart import render

pytestmark = pytest.mark.integration

NAMESPACE = "llamafleet"
KEY = "sk-test-containers"
SECRETS = {"gateway-keys": {"api-keys": f'["{KEY}"]'}}
MODEL = """apiVersion: llamafleet.io/v1alpha1
kind: Model
metadata:
  name: smollm2-135m
spec:
  source: builtin:smollm2-135m
  contextLength: 1024
  nodeSelector: {tier: cpu}
"""


# The model cache as a hostPath (the default: one folder per node, an init container hands it over) or
# one PersistentVolumeClaim every agent shares (fsGroup applies; nodes must keep their own identity).
CACHES = {"hostPath": {}, "sharedClaim": {"existingClaim": "models"}}


def values(image: str, cache: dict[str, str]) -> dict[str, Any]:
    repository, _, tag = image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "controlplane": {"replicas": 1, "settleSeconds": 5},
        "gateway": {"replicas": 1, "apiKeys": {"existingSecret": "gateway-keys"}},
        "agent": {"labels": {"tier": "cpu"}, "modelCache": cache},
        "redis": {"enabled": False},  # its image is not here; tests/integration/test_chart_cluster.py runs it
    }


@dataclass
class ContainerCluster:
    api: KubeApi
    pods: list[PodRun]
    hostpaths: Path
    cache: str  # a key of CACHES

    def pod(self, component: str, node: str = "") -> PodRun:
        return next(p for p in self.pods if p.component == component and (not node or p.node == node))

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.logs()[-3000:]}" for p in self.pods)


def selected(service: dict[str, Any], pods: list[PodRun]) -> list[PodRun]:
    """The pods a Service's selector picks (the leader's label aside: checked on its own)."""
    selector = {k: v for k, v in service["spec"]["selector"].items() if k != LEADER_LABEL}
    return [
        p for p in pods if selector.items() <= p.workload["spec"]["template"]["metadata"]["labels"].items()
    ]


@pytest.fixture(scope="module", params=sorted(CACHES))
def container_cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ContainerCluster]:
    image = containers.image()
    tmp = tmp_path_factory.mktemp("containers")
    objects = render(values(image, CACHES[request.param]), bare=True)  # its own keys Secret
    workloads = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
    services = [o for o in objects if o["kind"] == "Service"]
    subnet = random.randrange(1, 250)
    with (
        containers.network(f"10.91.{subnet}.0/24") as network,
        kube_api(tmp, server_port(), crds=(), host="0.0.0.0") as api,
    ):
        api.kubectl("apply", "-f", str(CRD_FILE))
        (tmp / "namespace.yaml").write_text(
            f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
        )
        api.kubectl("apply", "-f", str(tmp / "namespace.yaml"))
        for node in ("node-a", "node-b"):  # the Nodes their kubelets registered: agents join only as one
            api.create_node(node, {"kubernetes.io/hostname": node})
        pods: list[PodRun] = []
        for workload in workloads:
            nodes = ["node-a", "node-b"] if workload["kind"] == "DaemonSet" else ["node-a"]
            for node in nodes:
                name = f"{workload['metadata']['name']}-{random_tokens.token_hex(3)}"
                pods.append(PodRun(name, workload, node, f"10.91.{subnet}.{10 + len(pods)}"))
        for pod in pods:  # what a ReplicaSet or the DaemonSet controller creates
            api.create_pod(pod.name, pod.workload["spec"]["template"]["metadata"]["labels"], NAMESPACE)
        hosts = {s["metadata"]["name"]: selected(s, pods)[0].address for s in services if selected(s, pods)}
        # The control plane's service-account stand-in: a kubeconfig for the emulator on the host.
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", api.url.replace("127.0.0.1", f"10.91.{subnet}.1"))
        kubeconfig.chmod(0o644)
        cluster = ContainerCluster(api, pods, tmp / "hosts", request.param)
        try:
            for pod in sorted(pods, key=lambda p: p.component != "controlplane"):
                extra, mounts = [], {}
                if pod.component == "controlplane":
                    extra = ["--kubernetes-kubeconfig=/etc/llamafleet/kube/config"]
                    mounts = {"/etc/llamafleet/kube/config": kubeconfig}
                start(pod, SECRETS | rendered_secrets(objects), NAMESPACE, network, hosts, tmp, extra, mounts)
            yield cluster
        finally:
            names = [c for p in pods for c in p.containers]
            subprocess.run(["podman", "stop", "--time=20", *names], capture_output=True, timeout=120)
            for pod in pods:
                (tmp / f"{pod.name}.log").write_text(pod.logs())
            containers.remove(*names)


def probe_answers(pod: PodRun, probe: dict[str, Any]) -> bool:
    get = probe["httpGet"]
    try:
        return (
            oneshot.get(f"http://{pod.address}:{pod.port(get['port'])}{get['path']}", timeout=2).status_code
            == 200
        )
    except httpx.HTTPError:
        return False


def test_the_charts_pods_as_containers_serve_a_model_from_apply_to_delete(
    container_cluster: ContainerCluster,
) -> None:
    cluster = container_cluster
    probes = [(pod, kind, pod.main[kind]) for pod in cluster.pods
              for kind in ("startupProbe", "readinessProbe", "livenessProbe")]  # fmt: skip

    def every_probe_answers() -> bool:
        for pod in cluster.pods:
            if not pod.running():
                raise AssertionError(f"{pod.name} stopped:\n{pod.logs()[-4000:]}")
        return all(probe_answers(pod, probe) for pod, _, probe in probes)

    wait_until(every_probe_answers, 180, "every pod's probes", on_timeout=cluster.logs)

    for node in ("node-a", "node-b"):
        if cluster.cache == "hostPath":
            # Made root:root 0755 as the kubelet makes it, handed to the agent's user by the init container.
            folder = cluster.hostpaths / node / "var" / "lib" / "llamafleet"
            assert folder.stat().st_uid == 10001
        else:  # one claim for both nodes, given to fsGroup: each node keeps its own identity in it
            folder = cluster.hostpaths / "claims" / "models"
            assert folder.stat().st_gid == 10001
        assert (folder / "identity" / node / "tls.crt").exists()
    agent_spec = cluster.pod("agent").spec
    assert bool(agent_spec.get("initContainers")) == (cluster.cache == "hostPath")

    # Only the leader's pod carries the label the control plane's Service selects.
    controlplane = cluster.pod("controlplane")
    assert cluster.api.pod_labels(controlplane.name, NAMESPACE).get(LEADER_LABEL) == "true"

    kubectl = ["kubectl", "--kubeconfig", str(cluster.api.kubeconfig), "--namespace", NAMESPACE]
    subprocess.run([*kubectl, "apply", "-f", "-"], input=MODEL.encode(), check=True, capture_output=True,
                   timeout=60)  # fmt: skip
    waited = subprocess.run(
        [*kubectl, "wait", "--for=condition=Ready", "model/smollm2-135m", "--timeout=240s"],
        capture_output=True, text=True, timeout=250,
    )  # fmt: skip
    assert waited.returncode == 0, f"{waited.stderr}\n{cluster.logs()}"
    got = subprocess.run([*kubectl, "get", "model", "smollm2-135m", "-o", "yaml"], check=True,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    status = yaml.safe_load(got.stdout)["status"]
    assert status["nodes"] in ("node-a", "node-b")

    gateway = cluster.pod("gateway")
    target = (gateway.address, gateway.port("http"))
    with Service(server_port(), [Backend(target, f"http://{target[0]}:{target[1]}/readyz")]) as service:
        wait_until(lambda: bool(service.ready_endpoints), 30, "the gateway Service's endpoint")
        client = openai.OpenAI(base_url=f"http://{service.address}/v1", api_key=KEY, max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
        )
        assert reply.choices[0].message.content
        assert oneshot.get(f"http://{service.address}/v1/models", timeout=10).status_code == 401

    subprocess.run([*kubectl, "delete", "model", "smollm2-135m", "--timeout=120s"], check=True,
                   capture_output=True, timeout=130)  # fmt: skip
    agent = cluster.pod("agent", status["nodes"])

    def engine_gone() -> bool:
        ready = oneshot.get(f"http://{agent.address}:{agent.port('http')}/readyz", timeout=5).json()
        return ready.get("replicas") == 0

    wait_until(engine_gone, 60, "the agent to stop the deleted Model's engine", on_timeout=cluster.logs)

"""The chart, run: every rendered workload started as a local process (the container's args, env,
Secrets) in its own network namespace, the control plane against the API emulator. Every declared
probe answers on its declared port, a Model becomes Ready, and the openai client chats through the
gateway's Service."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from nodeagent.supervisor.replica import free_port
from tests.support import netns
from tests.support.chart_pods import Pod, command
from tests.support.kubeapi import CRD_FILE, REPO, kube_api, write_kubeconfig
from tests.support.service import Backend, Service
from tests.support.wait import wait_until
from tests.unit.deploy.test_chart import render

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(netns.available()), reason=netns.available() or "ok"),
]

VALUES: dict[str, Any] = {
    "controlplane": {"replicas": 1, "settleSeconds": 5},
    "gateway": {"replicas": 1, "apiKeys": {"existingSecret": "gateway-keys"}},
    "agent": {"labels": {"tier": "cpu"}},
}
SECRETS = {"gateway-keys": {"api-keys": '["sk-test-chart"]'}}
NAMESPACE = "llamafleet"
MODEL = """apiVersion: llamafleet.io/v1alpha1
kind: Model
metadata:
  name: smollm2-135m
spec:
  source: builtin:smollm2-135m
  contextLength: 1024
  parallelSlots: 2
  nodeSelector: {tier: cpu}
"""


def probe_ok(pod: Pod, probe: dict[str, Any]) -> bool:
    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://{pod.host.address}:{pod.port(get['port'])}{get['path']}"
            return httpx.get(url, timeout=2).status_code == 200
        with socket.create_connection((pod.host.address, pod.port(probe["tcpSocket"]["port"])), timeout=2):
            return True
    except (httpx.HTTPError, OSError):
        return False


@pytest.fixture(scope="module")
def chart_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Pod], Path]]:
    tmp = tmp_path_factory.mktemp("chart")
    objects = render(VALUES)
    workloads = {o["metadata"]["name"]: o for o in objects if o["kind"] in ("Deployment", "DaemonSet")}
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    with netns.network() as net, kube_api(tmp, free_port("127.0.0.1"), crds=(), host="0.0.0.0") as api:
        api.kubectl("apply", "-f", str(CRD_FILE))
        (tmp / "namespace.yaml").write_text(
            f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
        )
        api.kubectl("apply", "-f", str(tmp / "namespace.yaml"))
        pods: dict[str, Pod] = {}
        for name, workload in workloads.items():
            nodes = ["node-a", "node-b"] if workload["kind"] == "DaemonSet" else [name.rsplit("-", 1)[1]]
            for node in nodes:
                pods[f"{name}-{node}"] = Pod(f"{name}-{node}", workload, net.add(node))
        # Cluster DNS: a Service name resolves to the pod its selector picks.
        by_component = {
            p.workload["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in pods.values()
        }
        net.resolve({name: by_component[svc["spec"]["selector"]["app.kubernetes.io/component"]].host.address
                     for name, svc in services.items()})  # fmt: skip
        in_cluster = write_kubeconfig(tmp / "in-cluster", api.url.replace("127.0.0.1", net.gateway))
        try:
            for pod in pods.values():
                argv, env = command(pod, SECRETS, NAMESPACE, tmp / "volumes")
                if pod.container["name"] == "controlplane":  # the emulator speaks HTTP, not the pod's HTTPS
                    argv.append(f"--kubernetes-kubeconfig={in_cluster}")
                pod.log_path = tmp / f"{pod.name}.log"
                with pod.log_path.open("wb") as log:
                    pod.process = subprocess.Popen(
                        pod.host.command(argv), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                    )  # fmt: skip
            yield pods, api.kubeconfig
        finally:
            for pod in pods.values():
                if pod.process is not None and pod.process.poll() is None:
                    pod.process.terminate()
            for pod in pods.values():
                if pod.process is not None:
                    try:
                        pod.process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        pod.process.kill()


def test_every_declared_probe_answers_and_a_model_serves_through_the_gateway_service(
    chart_cluster: tuple[dict[str, Pod], Path], tmp_path: Path
) -> None:
    pods, kubeconfig = chart_cluster
    for pod in pods.values():
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = pod.container.get(kind)
            if probe is None:
                continue

            def answers(pod: Pod = pod, probe: dict[str, Any] = probe) -> bool:
                assert pod.process is not None
                if pod.process.poll() is not None:
                    raise AssertionError(f"{pod.name} exited:\n{pod.log()}")
                return probe_ok(pod, probe)

            wait_until(answers, 90, f"{pod.name}'s {kind}")

    model = tmp_path / "model.yaml"
    model.write_text(MODEL)
    kubectl = ["kubectl", "--kubeconfig", str(kubeconfig)]
    subprocess.run([*kubectl, "apply", "-f", str(model)], check=True, capture_output=True, timeout=60)
    subprocess.run([*kubectl, "wait", "--for=condition=Ready", "model/smollm2-135m", "--timeout=120s"],
                   check=True, capture_output=True, timeout=130)  # fmt: skip
    status = yaml.safe_load(
        subprocess.run(
            [*kubectl, "get", "model", "smollm2-135m", "-o", "yaml"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )["status"]
    assert status["nodes"] in ("node-a", "node-b")

    gateway = next(p for p in pods.values() if p.container["name"] == "gateway")
    target = (gateway.host.address, gateway.port("http"))
    with Service(
        free_port("127.0.0.1"), [Backend(target, f"http://{target[0]}:{target[1]}/readyz")]
    ) as service:
        wait_until(lambda: bool(service.ready_endpoints), 10, "the gateway Service's endpoint")
        client = openai.OpenAI(
            base_url=f"http://{service.address}/v1", api_key="sk-test-chart", max_retries=0
        )
        reply = client.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
        )
        assert reply.choices[0].message.content
        denied = httpx.get(f"http://{service.address}/v1/models", timeout=10)
        assert denied.status_code == 401  # the key came from the Secret, and it is enforced

"""The chart, run: every rendered workload started as a local process (the container's args, env,
Secrets) in its own network namespace, the control plane against the API emulator. Every declared
probe answers on its declared port, a Model becomes Ready, and the openai client chats through the
gateway's Service."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.support import netns, oneshot
from tests.support.chart_pods import Pod, command, rendered_secrets
from tests.support.child_env import child_env
from tests.support.kubeapi import CRD_FILE, REPO, kube_api, write_kubeconfig
from tests.support.network_policy import enforce
from tests.support.ports import server_port
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


@dataclass
class ChartCluster:
    pods: dict[str, Pod]
    kubeconfig: Path
    objects: list[dict[str, Any]]

    def pod(self, component: str, node: str = "") -> Pod:
        return next(
            p for p in self.pods.values()
            if p.workload["metadata"]["labels"]["app.kubernetes.io/component"] == component
            and (not node or p.host.name == node)
        )  # fmt: skip


def probe_ok(pod: Pod, probe: dict[str, Any]) -> bool:
    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://{pod.host.address}:{pod.port(get['port'])}{get['path']}"
            return oneshot.get(url, timeout=2).status_code == 200
        with socket.create_connection((pod.host.address, pod.port(probe["tcpSocket"]["port"])), timeout=2):
            return True
    except (httpx.HTTPError, OSError):
        return False


@pytest.fixture(scope="module")
def chart_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartCluster]:
    tmp = tmp_path_factory.mktemp("chart")
    objects = render(VALUES, bare=True)  # its own keys Secret
    workloads = {o["metadata"]["name"]: o for o in objects if o["kind"] in ("Deployment", "DaemonSet")}
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    with netns.network() as net, kube_api(tmp, server_port(), crds=(), host="0.0.0.0") as api:
        api.kubectl("apply", "-f", str(CRD_FILE))
        (tmp / "namespace.yaml").write_text(
            f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
        )
        api.kubectl("apply", "-f", str(tmp / "namespace.yaml"))
        for node in ("node-a", "node-b"):  # the Nodes their kubelets registered: agents join only as one
            api.create_node(node, {"kubernetes.io/hostname": node})
        pods: dict[str, Pod] = {}
        for name, workload in workloads.items():
            nodes = ["node-a", "node-b"] if workload["kind"] == "DaemonSet" else [name.rsplit("-", 1)[1]]
            for node in nodes:
                pods[f"{name}-{node}"] = Pod(f"{name}-{node}", workload, net.add(node))
        for pod in pods.values():  # the Pod objects a ReplicaSet or the DaemonSet controller creates
            api.create_pod(pod.name, pod.workload["spec"]["template"]["metadata"]["labels"], NAMESPACE)
        # Cluster DNS: a Service name resolves to the pod its selector picks.
        by_component = {
            p.workload["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in pods.values()
        }
        net.resolve({name: by_component[svc["spec"]["selector"]["app.kubernetes.io/component"]].host.address
                     for name, svc in services.items()})  # fmt: skip
        in_cluster = write_kubeconfig(tmp / "in-cluster", api.url.replace("127.0.0.1", net.gateway))
        try:
            for pod in pods.values():
                argv, env = command(pod, SECRETS | rendered_secrets(objects), NAMESPACE, tmp / "volumes")
                if pod.container["name"] == "controlplane":  # the emulator speaks HTTP, not the pod's HTTPS
                    argv.append(f"--kubernetes-kubeconfig={in_cluster}")
                pod.log_path = tmp / f"{pod.name}.log"
                with pod.log_path.open("wb") as log:
                    pod.process = subprocess.Popen(
                        pod.host.command(argv), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                        env=child_env(**env),
                    )  # fmt: skip
            yield ChartCluster(pods, api.kubeconfig, objects)
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
    chart_cluster: ChartCluster,
) -> None:
    pods, kubeconfig = chart_cluster.pods, chart_cluster.kubeconfig
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

    apply_model(kubeconfig)
    kubectl = ["kubectl", "--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE]
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
    with Service(server_port(), [Backend(target, f"http://{target[0]}:{target[1]}/readyz")]) as service:
        wait_until(lambda: bool(service.ready_endpoints), 10, "the gateway Service's endpoint")
        client = openai.OpenAI(
            base_url=f"http://{service.address}/v1", api_key="sk-test-chart", max_retries=0
        )
        reply = client.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
        )
        assert reply.choices[0].message.content
        denied = oneshot.get(f"http://{service.address}/v1/models", timeout=10)
        assert denied.status_code == 401  # the key came from the Secret, and it is enforced


def apply_model(kubeconfig: Path) -> None:
    """kubectl apply the example Model (idempotent) and wait until it is Ready."""
    kubectl = ["kubectl", "--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE]
    subprocess.run(
        [*kubectl, "apply", "-f", "-"], input=MODEL.encode(), check=True, capture_output=True, timeout=60
    )
    subprocess.run([*kubectl, "wait", "--for=condition=Ready", "model/smollm2-135m", "--timeout=120s"],
                   check=True, capture_output=True, timeout=130)  # fmt: skip


def can_connect(source: Pod, address: str, port: int) -> bool:
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=3)"
    result = subprocess.run(
        source.host.command([sys.executable, "-c", probe]), capture_output=True, timeout=30
    )
    return result.returncode == 0


def test_network_policies_hold_where_a_namespace_enforces_them(chart_cluster: ChartCluster) -> None:
    """The agents' NetworkPolicy as iptables rules in their namespaces: engines only from the gateway,
    the llama.cpp RPC port only from other agents."""
    cluster = chart_cluster
    (policy,) = [
        o
        for o in cluster.objects
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-agent")
    ]
    peers = [
        (p.workload["spec"]["template"]["metadata"]["labels"], p.host.address) for p in cluster.pods.values()
    ]
    for node in ("node-a", "node-b"):
        enforce(policy, cluster.pod("agent", node).host, peers)
    kubectl = ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "--namespace", NAMESPACE]
    apply_model(cluster.kubeconfig)
    model = json.loads(subprocess.run([*kubectl, "get", "model", "smollm2-135m", "-o", "json"], check=True,
                                      capture_output=True, text=True, timeout=60).stdout)  # fmt: skip
    node = model["status"]["nodes"]
    agent, other_agent = (
        cluster.pod("agent", node),
        cluster.pod("agent", "node-b" if node == "node-a" else "node-a"),
    )
    gateway, redis = cluster.pod("gateway"), cluster.pod("redis")
    engine_port = next(int(line.rsplit(":", 1)[1]) for line in agent.log().splitlines()
                       if "engine pid" in line and f"http://{agent.host.address}:" in line)  # fmt: skip

    assert can_connect(gateway, agent.host.address, engine_port)
    assert not can_connect(redis, agent.host.address, engine_port)  # not a gateway
    assert not can_connect(other_agent, agent.host.address, engine_port)

    # No split runs here, so no RPC worker's gate holds the port: a listener stands in for one.
    rpc_port = agent.port("rpc")
    listener = subprocess.Popen(agent.host.command([sys.executable, "-c", (
        "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('0.0.0.0', {rpc_port})); s.listen(); time.sleep(60)")]))  # fmt: skip
    try:
        wait_until(
            lambda: can_connect(other_agent, agent.host.address, rpc_port), 10, "the stand-in RPC listener"
        )
        assert not can_connect(gateway, agent.host.address, rpc_port)
        assert not can_connect(redis, agent.host.address, rpc_port)
    finally:
        listener.kill()
        listener.wait()
    assert can_connect(redis, agent.host.address, agent.port("http"))  # probes and metrics: open to all


# What the chart's ServiceMonitors and PodMonitor select: the port named http of each component.
SCRAPED = {"controlplane": ["/metrics"], "gateway": ["/metrics"], "agent": ["/metrics", "/metrics/engines"]}
# Dashboard queries that must have data once a model has served a chat (the others count events
# this test does not cause: refusals, restarts, scheduler rejections).
MUST_HAVE_DATA = (
    "llamafleet_gateway_requests_total",
    "llamafleet_gateway_generated_tokens_total",
    "llamafleet_engine_busy_slots",
    "llamafleet_engine_kv_cells_used",
    "llamafleet_model_replicas",
    "llamafleet_node_memory_free_bytes",
    "llamafleet_scheduler_decisions_total",
    "llamafleet_engine_prompt_tokens_total",
)


def test_a_real_prometheus_scrapes_every_tier_and_every_query_and_alert_works(
    chart_cluster: ChartCluster, tmp_path: Path
) -> None:
    cluster = chart_cluster
    apply_model(cluster.kubeconfig)
    gateway = cluster.pod("gateway")
    base, auth = (
        f"http://{gateway.host.address}:{gateway.port('http')}/v1",
        {"Authorization": "Bearer sk-test-chart"},
    )

    def served() -> bool:
        models = oneshot.get(f"{base}/models", headers=auth, timeout=10).json().get("data", [])
        return any(m["id"] == "smollm2-135m" and m["llamafleet"]["ready_replicas"] for m in models)

    wait_until(served, 60, "the gateway to route the model")
    body = {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
    assert oneshot.post(f"{base}/chat/completions", json=body, headers=auth, timeout=60).status_code == 200

    targets = [
        {"job": component, "target": f"{pod.host.address}:{pod.port('http')}", "path": path}
        for pod in cluster.pods.values()
        if (component := pod.workload["metadata"]["labels"]["app.kubernetes.io/component"]) in SCRAPED
        for path in SCRAPED[component]
    ]  # fmt: skip
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(REPO / "deploy" / "helm" / "llamafleet" / "files" / "alerts.yaml")],
        "scrape_configs": [
            {"job_name": f"{t['job']}_{i}", "metrics_path": t["path"],
             "static_configs": [{"targets": [t["target"]]}]}
            for i, t in enumerate(targets)
        ],
    }  # fmt: skip
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = server_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1"
    try:

        def query(expr: str) -> list[dict[str, Any]]:
            answer = oneshot.get(f"{api}/query", params={"query": expr}, timeout=10).json()
            assert answer["status"] == "success", (expr, answer)
            return list(answer["data"]["result"])

        def all_up() -> bool:
            try:
                return len([r for r in query("up") if r["value"][1] == "1"]) == len(targets)
            except (httpx.HTTPError, ValueError):
                return False

        wait_until(all_up, 60, f"Prometheus to scrape all {len(targets)} targets")
        wait_until(lambda: bool(query('llamafleet_engine_busy_slots{replica!=""}')), 30, "engine metrics")
        time.sleep(3)  # a few scrapes for rate() windows

        dashboard = json.loads((REPO / "deploy/helm/llamafleet/files/dashboard.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                result = query(target["expr"])
                if any(metric in target["expr"] for metric in MUST_HAVE_DATA):
                    assert result, f"no data for {panel['title']!r}: {target['expr']}"
        rules = oneshot.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
        loaded = {r["name"]: r for g in rules for r in g["rules"]}
        assert len(loaded) == 8
        assert all(r["health"] == "ok" for r in loaded.values()), loaded
        assert loaded["LlamafleetControlPlaneNoLeader"]["state"] == "inactive"  # the leader reports itself
        assert loaded["LlamafleetModelNoReadyReplica"]["state"] == "inactive"
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)

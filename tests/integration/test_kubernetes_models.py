"""`Model` resources end to end, driven by the real kubectl against the API emulator (tests/support/kubeapi):
apply → Ready → chat through the gateway → printer columns → scale → delete; bad Models stay contained."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.support.kubeapi import CRD_FILE, REPO, KubeApi, kube_api
from tests.support.ports import server_port
from tests.support.processes import (
    Proc,
    admin_cli,
    agent_args,
    engine_pids,
    gateway_args,
    grpc_port,
    kube_controlplane_args,
    wait_ready,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@dataclass
class KubeCluster:
    api: KubeApi
    controlplane: Proc
    agent: Proc
    gateway: Proc
    base_url: str
    tmp: Path
    grpc: str

    def chat(self, model: str) -> str:
        client = openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0, timeout=60)
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0
        )
        return reply.choices[0].message.content or ""

    def status(self, name: str, namespace: str = "default") -> dict[str, object]:
        out = self.api.kubectl("get", "model", name, "-n", namespace, "-o", "json").stdout
        status: dict[str, object] = json.loads(out).get("status") or {}
        return status

    def condition(self, name: str, kind: str, namespace: str = "default") -> dict[str, str]:
        for c in self.status(name, namespace).get("conditions") or []:  # type: ignore[attr-defined]
            if c["type"] == kind:
                return dict(c)
        return {}

    def apply(self, manifest: str, *, check: bool = True) -> tuple[int, str]:
        path = self.tmp / f"manifest-{abs(hash(manifest))}.yaml"
        path.write_text(manifest)
        result = self.api.kubectl("apply", "-f", str(path), check=check)
        return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    tmp = tmp_path_factory.mktemp("kubernetes")
    with kube_api(tmp, server_port(), crds=()) as api:
        api.kubectl("apply", "-f", str(CRD_FILE))  # the README's first step
        port, http_port, gw_port = grpc_port(), server_port(), server_port()
        address = f"127.0.0.1:{port}"
        cp = Proc(
            "controlplane",
            # Only team-b may serve ids under "reserved-" (name squatting across namespaces).
            [
                *kube_controlplane_args(api.kubeconfig, port, http_port, "cp-0", tmp),
                "--kubernetes-model-namespaces",
                "reserved-*=team-b",
            ],
            tmp / "cp.log",
        ).start()
        api.create_node("node-a", {"kubernetes.io/hostname": "node-a"})  # the kubelet registered it
        agent = Proc("agent", agent_args(tmp, address), tmp / "agent.log").start()
        gateway = Proc("gateway", gateway_args(address, gw_port, tmp), tmp / "gateway.log").start()
        try:
            wait_ready(cp, f"http://127.0.0.1:{http_port}/readyz")
            # A Model Ready in the API is not yet a route: the gateway must have its first routing table.
            wait_ready(gateway, f"http://127.0.0.1:{gw_port}/readyz")
            yield KubeCluster(api, cp, agent, gateway, f"http://127.0.0.1:{gw_port}", tmp, address)
        finally:
            for proc in (gateway, agent, cp):
                proc.stop()


def readme_model() -> str:
    """The example Model in the README, exactly as a newcomer would copy it."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"```yaml\n(apiVersion: llamafleet\.io/v1alpha1\n.*?)```", text, re.S)
    assert match, "the README has no example Model"
    return match.group(1)


def test_model_lifecycle_with_kubectl(kube_cluster: KubeCluster) -> None:
    kc = kube_cluster
    kc.apply(readme_model())
    kc.api.kubectl("wait", "--for=condition=Ready", "model/smollm2-135m", "--timeout=120s", timeout=130)
    assert kc.chat("smollm2-135m").strip()

    table = kc.api.kubectl("get", "models").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "DESIRED", "STATUS", "NODES", "GPU-LAYERS", "AGE"]
    assert table[1].split()[:6] == ["smollm2-135m", "1", "1", "AllReplicasReady", "node-a", "0"]
    assert kc.api.kubectl("get", "lfm", "-o", "name").stdout.strip() == "model.llamafleet.io/smollm2-135m"
    listed = subprocess.run(
        [sys.executable, "-m", "llamafleet.cli.main", "models", "--json", "--controlplane", kc.grpc,
         *admin_cli(kc.tmp)],
        check=True, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    (model,) = json.loads(listed.stdout)  # the same view as with a models file
    assert (model["name"], model["ready_replicas"], model["desired_replicas"]) == ("smollm2-135m", 1, 1)

    kc.api.kubectl("scale", "model/smollm2-135m", "--replicas=2")
    wait_until(
        lambda: kc.status("smollm2-135m").get("readyReplicas") == 2, 120, "two ready replicas in status"
    )
    status = kc.status("smollm2-135m")
    assert status["replicas"] == 2
    assert status["observedGeneration"] == 2  # the scale changed the spec
    assert len(engine_pids(kc.agent)) == 2
    described = kc.api.kubectl("describe", "model", "smollm2-135m").stdout
    assert "Placed" in described, described
    assert "ReplicaReady" in described, described

    kc.api.kubectl("delete", "model/smollm2-135m", "--timeout=60s", timeout=70)  # waits for the finalizer
    gone = kc.api.kubectl("get", "model", "smollm2-135m", check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr
    assert engine_pids(kc.agent) == {}, "a deleted Model's engines must be stopped before it goes"


GOOD = """apiVersion: llamafleet.io/v1alpha1
kind: Model
metadata:
  name: good-smol
spec:
  source: builtin:smollm2-135m
  contextLength: 512
  parallelSlots: 2
"""


def bad(name: str, spec: str) -> str:
    return f"apiVersion: llamafleet.io/v1alpha1\nkind: Model\nmetadata:\n  name: {name}\nspec:\n{spec}"


def test_bad_models_are_rejected_or_reported_and_the_others_keep_serving(kube_cluster: KubeCluster) -> None:
    kc = kube_cluster
    kc.apply(GOOD)
    kc.api.kubectl("wait", "--for=condition=Ready", "model/good-smol", "--timeout=120s", timeout=130)

    # What the schema can reject, the API server rejects (kubectl validates on the server).
    code, out = kc.apply(
        bad("tiny-context", "  source: builtin:smollm2-135m\n  contextLength: 10\n"), check=False
    )
    assert code != 0, out
    assert "spec.contextLength" in out, out
    code, out = kc.apply(bad("typo", "  source: builtin:smollm2-135m\n  replicaz: 2\n"), check=False)
    assert code != 0, out
    assert 'unknown field "spec.replicaz"' in out, out

    # What only the cluster can tell becomes a condition with a reason.
    kc.apply(bad("missing-file", "  source: /models/not-there.gguf\n"))
    kc.api.kubectl(
        "wait", "--for=condition=ModelValid=false", "model/missing-file", "--timeout=60s", timeout=70
    )
    assert kc.condition("missing-file", "ModelValid")["reason"] == "ModelNotFound"

    kc.apply(
        bad("fits-nowhere", "  source: builtin:smollm2-135m\n  contextLength: 1048576\n  parallelSlots: 64\n")
    )
    kc.api.kubectl("wait", "--for=condition=Placed=false", "model/fits-nowhere", "--timeout=60s", timeout=70)
    placed = kc.condition("fits-nowhere", "Placed")
    assert placed["reason"] == "NoCapacity", placed
    assert "node-a" in placed["message"], placed

    kc.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-b\n")
    kc.apply(GOOD.replace("name: good-smol", "name: good-smol\n  namespace: team-b"))
    wait_until(lambda: kc.condition("good-smol", "ModelValid", "team-b").get("reason") == "NameConflict", 30,
               "a NameConflict condition on the newer Model")  # fmt: skip
    conflict = kc.condition("good-smol", "ModelValid", "team-b")
    assert "default/good-smol" in conflict["message"], conflict

    # An id the policy reserves for another namespace is not served here, and says why.
    kc.apply(GOOD.replace("name: good-smol", "name: reserved-chat"))
    wait_until(lambda: kc.condition("reserved-chat", "ModelValid").get("reason") == "NamespaceNotAllowed", 30,
               "a NamespaceNotAllowed condition")  # fmt: skip
    assert "team-b" in kc.condition("reserved-chat", "ModelValid")["message"]
    assert "NamespaceNotAllowed" in kc.api.kubectl("describe", "model", "reserved-chat").stdout

    # Through all of it the good model kept its replica and keeps answering.
    assert kc.chat("good-smol").strip()
    assert kc.condition("good-smol", "Ready")["status"] == "True"
    assert kc.status("good-smol")["readyReplicas"] == 1
    for name, ns in (("missing-file", "default"), ("fits-nowhere", "default"), ("good-smol", "team-b"),
                     ("good-smol", "default"), ("reserved-chat", "default")):  # fmt: skip
        kc.api.kubectl("delete", "model", name, "-n", ns, "--timeout=60s", timeout=70)


EXTERNAL = """apiVersion: llamafleet.io/v1alpha1
kind: Model
metadata:
  name: ext-smol
spec:
  source: builtin:smollm2-135m
  replicas: 1
  contextLength: 512
  parallelSlots: 1
  autoscaling: {mode: External, minReplicas: 0, maxReplicas: 3, panicWindow: 1s, stableWindow: 2s}
"""


def test_external_mode_leaves_the_count_to_its_owner(kube_cluster: KubeCluster) -> None:
    """An HPA or KEDA owns spec.replicas (the scale subresource): load never moves it, a scale does."""
    kc = kube_cluster
    kc.apply(EXTERNAL)
    kc.api.kubectl("wait", "--for=condition=Ready", "model/ext-smol", "--timeout=120s", timeout=130)
    client = openai.OpenAI(base_url=f"{kc.base_url}/v1", api_key="unused", max_retries=0, timeout=120)

    def long_answer(_: int) -> str:
        # 60 tokens: seconds on one slot, yet the 4th fits the gateway's 30 s queue on a busy machine too
        answer = client.completions.create(model="ext-smol", prompt="Once upon a time", max_tokens=60)
        return answer.choices[0].text

    # 4 long requests on 1 slot for seconds: Internal mode would panic to 3 replicas within 1 s
    with ThreadPoolExecutor(4) as pool:
        assert all(list(pool.map(long_answer, range(4))))
    assert len([n for n in engine_pids(kc.agent) if n.startswith("ext-smol#")]) == 1
    status = kc.status("ext-smol")
    assert status["autoscaling"]["desiredReplicas"] == 1, status  # type: ignore[index]
    assert "External" in status["autoscaling"]["reason"]  # type: ignore[index]
    kc.api.kubectl("scale", "model/ext-smol", "--replicas=2")  # the outside owner decides
    wait_until(lambda: kc.status("ext-smol").get("readyReplicas") == 2, 120, "the owner's 2 replicas")
    time.sleep(3)  # idle now: Internal mode with minReplicas 0 would start going down; External must not
    spec = json.loads(kc.api.kubectl("get", "model", "ext-smol", "-o", "json").stdout)["spec"]
    assert spec["replicas"] == 2
    assert len([n for n in engine_pids(kc.agent) if n.startswith("ext-smol#")]) == 2
    kc.api.kubectl("delete", "model/ext-smol", "--timeout=60s", timeout=70)

"""The Helm chart: lints strictly, renders for several value sets, every object valid for the Kubernetes
versions we claim, locked-down pods with probes, exact RBAC, and container args the CLI accepts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from llamafleet.cli.main import build_parser
from tests.support.kubeapi import CRD_FILE, REPO
from tests.support.kubeapi.schema import default, prune, validate

CHART = REPO / "deploy" / "helm" / "llamafleet"
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())  # the oldest we claim, the newest bundled

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "gpu-nodes": {
        "agent": {
            "gpu": {"count": 1},
            "labels": {"tier": "gpu"},
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    },
    "external-redis-and-keys": {
        "redis": {"enabled": False, "external": {"existingSecret": "redis-url"}},
        "gateway": {"apiKeys": {"existingSecret": "gateway-keys"}, "autoscaling": {"enabled": True}},
        "controlplane": {"watchNamespaces": ["team-a", "team-b"]},
        "agent": {"modelCache": {"existingClaim": "models"}},
    },
    "monitoring-on": {"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                                     "tracing": {"otlpEndpoint": "http://otel-collector.monitoring:4318"}}},
    "platform-extras": {
        "imagePullSecrets": [{"name": "registry"}],
        **{
            component: {
                "extraArgs": ["--log-level=DEBUG"],
                "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
                "podLabels": {"team": "ml"},
                "podAnnotations": {"example.com/owner": "ml"},
                "priorityClassName": "high",
                "runtimeClassName": "nvidia",
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                               "whenUnsatisfiable": "ScheduleAnyway"}],
            }
            for component in ("controlplane", "gateway", "agent")
        },
        "redis": {"podLabels": {"team": "ml"}, "priorityClassName": "high"},
    },
    "ingress": {
        "gateway": {"ingress": {"enabled": True, "className": "nginx", "host": "llm.example.com",
                                "tls": [{"secretName": "llm-tls", "hosts": ["llm.example.com"]}]}},
    },
    "inference-pool": {
        "inferencePool": {
            "enabled": True, "apiCheck": False,
            "httpRoute": {"parentRefs": [{"name": "inference-gateway", "namespace": "gateways"}]},
            "dataPlaneFrom": [{"namespaceSelector": {"matchLabels": {"gateway-data-plane": "yes"}}}],
        },
        "networkPolicy": {"gatewayFrom": [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}]},
    },
    "everything-off": {
        "redis": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "controlplane": {"replicas": 1, "podDisruptionBudget": {"enabled": False}},
    },
}  # fmt: skip


# The chart refuses to render without API keys (or gateway.allowAnonymous): every render here names a
# keys-file Secret unless the test asks for the bare values.
WITH_KEYS: dict[str, Any] = {"gateway": {"apiKeys": {"keysFileSecret": "gateway-keys"}}}


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def render(values: dict[str, Any], bare: bool = False) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    try:
        given = values if bare else merged(WITH_KEYS, values)
        out = chart.render(given, name="lf", namespace="llamafleet", is_install=True)
    finally:
        chart.close()
    return [d for name, text in out.items() if name.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c for o in objects if o["kind"] in ("Deployment", "DaemonSet")
        for c in o["spec"]["template"]["spec"]["containers"]
    ]  # fmt: skip


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_lints_strictly(kube_version: str) -> None:
    result = helm.lint(str(CHART), strict=True, kube_version=kube_version)
    assert result["errors"] == [], result


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_is_valid_kubernetes(name: str, kube_version: str) -> None:
    for obj in render(VALUE_SETS[name]):
        if obj["apiVersion"].split("/")[0] in EXTENSION_APIS:  # no schema bundled: see their own test
            continue
        kubernetes_validate.validate(obj, kube_version, strict=True)


EXTENSION_APIS = ("inference.networking.k8s.io", "gateway.networking.k8s.io")


def test_the_inference_pool_its_picker_and_route_hold_together() -> None:
    """GIE's InferencePool (v1: a one-key selector, exactly one target port, the picker's Service and
    port), the picker's Service on the gateway pods' picker port, the gateway serving it, an HTTPRoute
    to the pool, and the data plane let through to the picker and the engines."""
    objects = render(VALUE_SETS["inference-pool"])
    (pool,) = of_kind(objects, "InferencePool")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "agent"
    assert pool["spec"]["targetPorts"] == [{"number": 30000}]  # the API allows one: the first engine port
    picker_ref = pool["spec"]["endpointPickerRef"]
    assert picker_ref == {
        "name": "lf-llamafleet-picker",
        "port": {"number": 9002},
        "failureMode": "FailClose",
    }
    services = {o["metadata"]["name"]: o for o in of_kind(objects, "Service")}
    picker = services["lf-llamafleet-picker"]
    assert picker["spec"]["selector"]["app.kubernetes.io/component"] == "gateway"
    (port,) = picker["spec"]["ports"]
    assert (port["port"], port["targetPort"], port["appProtocol"]) == (9002, "picker", "kubernetes.io/h2c")
    gateway = next(
        o for o in of_kind(objects, "Deployment") if o["metadata"]["name"] == "lf-llamafleet-gateway"
    )
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert "--picker-port=9002" in container["args"]
    assert {"name": "picker", "containerPort": 9002, "protocol": "TCP"} in container["ports"]
    (route,) = [
        r for r in of_kind(objects, "HTTPRoute") if r["metadata"]["name"] == "lf-llamafleet-inference"
    ]
    assert route["spec"]["parentRefs"] == [{"name": "inference-gateway", "namespace": "gateways"}]
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "lf-llamafleet"}
    ]
    data_plane = VALUE_SETS["inference-pool"]["inferencePool"]["dataPlaneFrom"][0]
    policies = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
    engines = policies["lf-llamafleet-agent"]["spec"]["ingress"][0]
    assert data_plane in engines["from"]
    picker_rule = policies["lf-llamafleet-gateway"]["spec"]["ingress"][1]
    assert picker_rule == {"from": [data_plane], "ports": [{"port": 9002, "protocol": "TCP"}]}
    # Offline (no inference.networking.k8s.io/v1 served) the pool is not rendered unless asked…
    checked = merged(VALUE_SETS["inference-pool"], {"inferencePool": {"apiCheck": True}})
    assert not {o["kind"] for o in render(checked)} & {"InferencePool", "HTTPRoute"}
    # …and without the data plane named, the engines' NetworkPolicy would shut it out: refused.
    with pytest.raises(helm.HelmError, match="dataPlaneFrom"):
        render(merged(VALUE_SETS["inference-pool"], {"inferencePool": {"dataPlaneFrom": []}}))


def test_values_outside_the_schema_are_refused() -> None:
    with pytest.raises(helm.HelmError, match="bogus"):
        render({"gateway": {"bogus": 1}})
    with pytest.raises(helm.HelmError, match="balancer"):
        render({"gateway": {"balancer": "fastest"}})


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_pods_are_locked_down_and_probed(name: str) -> None:
    objects = render(VALUE_SETS[name])
    for workload in [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert security["readOnlyRootFilesystem"] is True
            assert container.get("readinessProbe"), container["name"]
            assert container.get("livenessProbe"), container["name"]
            for env in container.get("env", []):
                assert "value" not in env or not re.search(r"(?i)key|token|password", env["name"]), env


def test_gpu_nodes_request_the_gpu_and_keep_the_agent_labels() -> None:
    (agent,) = of_kind(render(VALUE_SETS["gpu-nodes"]), "DaemonSet")
    container = agent["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--labels=tier=gpu" in container["args"]
    assert agent["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_rbac_grants_exactly_what_the_operator_and_leader_election_call() -> None:
    objects = render({"controlplane": {"watchAllNamespaces": True}})
    (cluster_role, nodes) = of_kind(objects, "ClusterRole")
    assert nodes["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]  # labels
    granted = {(g, r, v) for rule in cluster_role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
    models = {("llamafleet.io", "models", verb) for verb in ("list", "watch", "patch")}
    assert granted == models | {("llamafleet.io", "models/status", "patch"), ("", "events", "create")}
    (leases,) = [r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("leader-election")]
    assert leases["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                "verbs": ["get", "create", "update"]},
                               {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch", "list"]},
                               {"apiGroups": [""], "resources": ["configmaps"],
                                "resourceNames": ["lf-llamafleet-node-keys"], "verbs": ["get", "patch"]},
                               {"apiGroups": [""], "resources": ["configmaps"],
                                "verbs": ["create"]}]  # fmt: skip
    (controlplane,) = [
        o for o in objects if o["kind"] == "Deployment" and "controlplane" in o["metadata"]["name"]
    ]
    args = controlplane["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--kubernetes-node-keys-configmap=lf-llamafleet-node-keys" in args  # the one the Role names
    scoped = render(VALUE_SETS["external-redis-and-keys"])
    assert [r["metadata"]["name"] for r in of_kind(scoped, "ClusterRole")] == ["lf-llamafleet-nodes"]
    bindings = [r for r in of_kind(scoped, "RoleBinding") if r["metadata"]["name"].endswith("-models")]
    assert sorted(r["metadata"]["namespace"] for r in bindings) == ["team-a", "team-b"]
    # By default only the release's own namespace: a Role there, and the process told so.
    default = render({})
    assert [r["metadata"]["name"] for r in of_kind(default, "ClusterRole")] == ["lf-llamafleet-nodes"]
    (binding,) = [r for r in of_kind(default, "RoleBinding") if r["metadata"]["name"].endswith("-models")]
    assert binding["metadata"]["namespace"] == "llamafleet"
    (deployment,) = [
        o for o in default if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-controlplane")
    ]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LLAMAFLEET_CONTROLPLANE__KUBERNETES__NAMESPACES"] == '["llamafleet"]'
    rules = render({"controlplane": {"modelNamespaces": {"prod-*": ["prod"], "shared": ["prod", "staging"]}}})
    (deployment,) = [
        o for o in rules if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-controlplane")
    ]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert sorted(json.loads(env["LLAMAFLEET_CONTROLPLANE__KUBERNETES__MODEL_NAMESPACES"])) == [
        "prod-*=prod",
        "shared=prod,staging",
    ]


def test_network_policies_name_the_ports_the_processes_use() -> None:
    objects = render({})
    policies = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
    agent = policies["lf-llamafleet-agent"]["spec"]["ingress"]
    engines, rpc, probes = agent
    assert engines["ports"] == [{"port": 30000, "endPort": 30099, "protocol": "TCP"}]
    assert engines["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert rpc["ports"] == [{"port": 50052, "endPort": 50059, "protocol": "TCP"}]
    assert rpc["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "agent"
    assert "from" not in probes
    (daemonset,) = of_kind(objects, "DaemonSet")
    assert (
        "--supervisor-engine-ports=30000-30099"
        in daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert of_kind(render(VALUE_SETS["everything-off"]), "NetworkPolicy") == []


def test_a_download_proxy_reaches_the_agents_and_the_cluster_stays_direct() -> None:
    values = {
        "agent": {"modelCache": {"proxy": {"httpsProxy": "http://proxy.corp:3128", "noProxy": ".corp"}}}
    }
    (agent,) = of_kind(render(values), "DaemonSet")
    env = {e["name"]: e.get("value") for e in agent["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HTTPS_PROXY"] == "http://proxy.corp:3128"
    assert "HTTP_PROXY" not in env
    assert env["NO_PROXY"].split(",") == [
        "localhost",
        "127.0.0.1",
        ".svc",
        ".cluster.local",
        "lf-llamafleet-controlplane",
        ".corp",
    ]
    (bare,) = of_kind(render({}), "DaemonSet")
    assert not {"HTTPS_PROXY", "NO_PROXY"} & {
        e["name"] for e in bare["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def test_tracing_reaches_the_gateways_and_the_agents_engines() -> None:
    wanted = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.monitoring:4318",
              "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1"}  # fmt: skip
    for container in containers(render(VALUE_SETS["monitoring-on"])):
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if container["name"] in ("gateway", "agent"):  # engines inherit the agent's environment
            assert {k: env.get(k) for k in wanted} == wanted, container["name"]
    for container in containers(render({})):  # off by default
        assert not any(e["name"].startswith("OTEL_") for e in container.get("env", []))


def test_monitoring_is_rendered_only_where_its_api_exists() -> None:
    """Offline rendering has no monitoring.coreos.com/v1, so even when enabled nothing is rendered."""
    kinds = {o["kind"] for o in render(VALUE_SETS["monitoring-on"])}
    assert not kinds & {"ServiceMonitor", "PodMonitor"}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_container_args_are_flags_the_cli_accepts(name: str) -> None:
    parser = build_parser()
    for container in containers(render(VALUE_SETS[name])):
        if container["name"] == "redis":
            continue
        args = [re.sub(r"\$\((\w+)\)", "x", a) for a in container["args"]]  # Kubernetes expands $(VAR)
        parsed = parser.parse_args(args)  # exits (SystemExit) on an unknown flag
        assert parsed.command == container["name"]


def test_the_crd_is_the_generated_file_and_the_readme_model_fits_it() -> None:
    chart = helm.Chart.load(str(CHART))
    try:
        (crd,) = chart.crds
    finally:
        chart.close()
    assert crd["name"] == "crds/models.llamafleet.io.yaml"
    assert crd["data"] == CRD_FILE.read_text()  # the generated file itself, no copy
    schema = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = (REPO / "README.md").read_text()
    match = re.search(r"```yaml\n(apiVersion: llamafleet\.io/v1alpha1\n.*?)```", text, re.S)
    assert match
    model = yaml.safe_load(match.group(1))
    _, dropped = prune(model, schema)
    assert dropped == []
    assert validate(default(model, schema), schema) == []


def test_chart_files() -> None:
    assert (CHART / "values.schema.json").is_file()
    notes = Path(CHART / "templates" / "NOTES.txt").read_text()
    assert notes.count(" apply -f - <<MODEL") == 1  # one Model to apply, in the release namespace


def test_the_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(REPO / "deploy" / "docker" / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        raise AssertionError("promtool is not installed: `make test` installs Debian's prometheus package")
    return found


ALERTS = CHART / "files" / "alerts.yaml"


def test_alert_rules_are_valid_and_each_alert_fires_and_resolves() -> None:
    checked = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = Path(__file__).parent / "alerts_test.yaml"
    ran = subprocess.run(
        [promtool(), "test", "rules", tests.name], capture_output=True, text=True, cwd=tests.parent
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    tested = {t["alertname"] for t in yaml.safe_load(tests.read_text())["tests"][0]["alert_rule_test"]}
    assert alerts == tested, "every alert needs a firing and a resolving case"


def dashboard_queries() -> list[str]:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool checks every expression of a rule file: each query becomes a recording rule."""
    queries = dashboard_queries()
    records = [{"record": f"llamafleet:dashboard_query_{i}", "expr": q} for i, q in enumerate(queries)]
    rules = {"groups": [{"name": "dashboard", "rules": records}]}
    (tmp_path / "dashboard_rules.yaml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run([promtool(), "check", "rules", str(tmp_path / "dashboard_rules.yaml")],
                             capture_output=True, text=True)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_configmap_carries_the_dashboard() -> None:
    (configmap,) = [
        o for o in render({"monitoring": {"dashboard": {"enabled": True}}}) if o["kind"] == "ConfigMap"
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["llamafleet.json"])["uid"] == "llamafleet-overview"


def test_the_values_table_in_the_docs_is_generated_from_the_schema() -> None:
    from tools.gen_values_doc import DOC
    from tools.gen_values_doc import render as render_doc

    assert DOC.read_text() == render_doc(DOC.read_text()), "the values table is stale: run `make chart-docs`"


def test_the_schema_describes_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        assert node.get("description") or node.get("properties"), f"{path} has no description"
        if isinstance(value, dict) and node.get("properties"):
            assert node.get("additionalProperties") is False, f"{path} must refuse unknown keys"
            for key, sub_value in value.items():
                assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
                walk(node["properties"][key], sub_value, f"{path}.{key}")

    walk(schema, values, "values")


def test_model_downloads_take_their_credentials_from_secrets() -> None:
    cache = {"maxSize": "200GiB", "hfEndpoint": "https://hf.example", "hfTokenSecret": "hf",
             "downloadHeadersSecret": "dl"}  # fmt: skip
    objects = render({"agent": {"modelCache": cache}})
    agent = next(o for o in objects if o["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    args = agent["containers"][0]["args"]
    assert "--supervisor-cache-max=200GiB" in args
    assert "--supervisor-hf-token-file=/etc/llamafleet/hf/token" in args
    assert {"name": "HF_ENDPOINT", "value": "https://hf.example"} in agent["containers"][0]["env"]
    secrets = {v["secret"]["secretName"] for v in agent["volumes"] if "secret" in v}
    assert {"hf", "dl"} <= secrets  # the token and the headers never appear in values or args


def test_the_controlplane_checks_nodes_against_the_agents_own_settings() -> None:
    """One contract: the ports, labels and pods the control plane believes are the DaemonSet's own."""
    objects = render(VALUE_SETS["gpu-nodes"])
    (agent,) = of_kind(objects, "DaemonSet")
    (cp,) = [o for o in of_kind(objects, "Deployment") if o["metadata"]["name"].endswith("-controlplane")]
    agent_args = agent["spec"]["template"]["spec"]["containers"][0]["args"]
    container = cp["spec"]["template"]["spec"]["containers"][0]

    def value(args: list[str], flag: str) -> str:
        (found,) = [a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")]
        return found

    assert value(container["args"], "--node-engine-ports") == value(agent_args, "--supervisor-engine-ports")
    assert value(container["args"], "--node-rpc-ports") == value(agent_args, "--supervisor-rpc-ports")
    selector = dict(t.split("=") for t in value(container["args"], "--kubernetes-agent-selector").split(","))
    assert selector.items() <= agent["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e.get("value") for e in container["env"]}
    claimed = sorted(a.removeprefix("--labels=") for a in agent_args if a.startswith("--labels="))
    assert json.loads(env["LLAMAFLEET_CONTROLPLANE__KUBERNETES__AGENT_LABELS"]) == claimed == ["tier=gpu"]

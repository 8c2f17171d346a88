"""What platform teams ask of a chart: per-component args, env, pod labels and annotations, priority,
runtime class, topology spread and pull secrets on every pod (Redis included); an Ingress or an HTTPRoute
to the gateway; PKI that GitOps can render (no lookup); and a default image `make image` produces."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.support.kubeapi import REPO
from tests.unit.deploy.test_chart import CHART, VALUE_SETS, WITH_KEYS, merged, render


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in objects
            if o["kind"] in ("Deployment", "DaemonSet")}  # fmt: skip


def test_every_pod_takes_the_platform_extras() -> None:
    found = workloads(render(VALUE_SETS["platform-extras"]))
    assert set(found) == {"controlplane", "gateway", "agent", "redis"}
    for component, workload in found.items():
        template = workload["spec"]["template"]
        pod = template["spec"]
        assert pod["imagePullSecrets"] == [{"name": "registry"}], component  # Redis too
        assert template["metadata"]["labels"]["team"] == "ml", component
        assert pod["priorityClassName"] == "high", component
        selector = workload["spec"]["selector"]["matchLabels"]
        assert "team" not in selector  # pod labels never change a selector (immutable on upgrade)
        if component == "redis":
            continue
        assert template["metadata"]["annotations"] == {"example.com/owner": "ml"}
        assert pod["runtimeClassName"] == "nvidia"
        assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
        container = pod["containers"][0]
        assert container["args"][-1] == "--log-level=DEBUG" or "--log-level=DEBUG" in container["args"]
        assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"], component


def test_without_extras_nothing_is_added() -> None:
    for component, workload in workloads(render({})).items():
        pod = workload["spec"]["template"]["spec"]
        assert not {
            "imagePullSecrets",
            "priorityClassName",
            "runtimeClassName",
            "topologySpreadConstraints",
        } & set(pod)
        assert "annotations" not in workload["spec"]["template"]["metadata"], component


def test_an_ingress_and_an_httproute_reach_the_gateway_service() -> None:
    objects = render(VALUE_SETS["ingress"])
    (ingress,) = [o for o in objects if o["kind"] == "Ingress"]
    (service,) = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-gateway")]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    assert ingress["spec"]["ingressClassName"] == "nginx"

    parents = [{"name": "shared", "namespace": "gateway-system"}]
    route_values = {
        "gateway": {"httpRoute": {"enabled": True, "hostnames": ["llm.example.com"], "parentRefs": parents}}
    }
    (route,) = [o for o in render(route_values) if o["kind"] == "HTTPRoute"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "shared", "namespace": "gateway-system"}]
    (ref,) = route["spec"]["rules"][0]["backendRefs"]
    assert ref == {"name": service["metadata"]["name"], "port": service["spec"]["ports"][0]["port"]}
    with pytest.raises(helm.HelmError, match="parentRefs"):
        render({"gateway": {"httpRoute": {"enabled": True}}})


def test_gitops_renders_are_stable_with_pki_secrets_you_manage() -> None:
    """`helm template` (Argo CD, Flux) has no lookup: the chart's generated PKI would change on every render
    and split the cluster. With the Secrets named, nothing is generated and two renders are identical."""
    assert render({}) != render({})  # generated: a new CA each render without lookup (why the doc says so)
    managed = {
        "security": {"pki": {"existingSecret": "lf-pki", "joinSecret": "lf-join", "gatewaySecret": "lf-gw"}},
        "redis": {"passwordSecret": "lf-redis"},
    }
    first, second = render(managed), render(managed)
    assert first == second
    assert not [o for o in first if o["kind"] == "Secret"]
    mounted = {v["secret"]["secretName"] for w in workloads(first).values()
               for v in w["spec"]["template"]["spec"].get("volumes", []) if "secret" in v}  # fmt: skip
    assert {"lf-pki", "lf-join", "lf-gw"} <= mounted
    redis = workloads(first)["redis"]["spec"]["template"]["spec"]["containers"][0]
    assert redis["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "lf-redis"


def test_the_in_chart_redis_requires_a_password_the_gateways_carry() -> None:
    objects = render({})
    found = workloads(objects)
    redis = found["redis"]["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    (secret,) = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-redis")]
    assert len(secret["data"]["password"]) >= 40
    env = [e for e in found["gateway"]["spec"]["template"]["spec"]["containers"][0]["env"]]
    by_name = {e["name"]: e for e in env}
    assert by_name["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert by_name["LLAMAFLEET_GATEWAY__REDIS_URL"]["value"].startswith("redis://:$(REDIS_PASSWORD)@")
    names = [e["name"] for e in env]
    assert names.index("REDIS_PASSWORD") < names.index("LLAMAFLEET_GATEWAY__REDIS_URL")  # defined first


def test_the_default_image_is_what_make_image_builds_or_the_readme_sets() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    makefile = (REPO / "Makefile").read_text()
    built = re.search(r"^IMAGE \?= (\S+)$", makefile, re.M)
    assert built is not None
    default = f"{values['image']['repository']}:{values['image']['tag'] or 'APPVERSION'}"
    readme = (REPO / "README.md").read_text().replace("\\\n", " ")  # shell continuation lines joined
    install = [line for line in readme.splitlines() if "helm install" in line]
    assert install, "the README says how to install the chart"
    assert default.startswith(built.group(1).split(":")[0]) or all(
        "image.repository=" in line for line in install
    ), "the README's helm install must set the image make image builds (or the defaults must agree)"


def notes(values: dict[str, Any]) -> str:
    chart = helm.Chart.load(str(CHART))
    try:
        out = chart.render(merged(WITH_KEYS, values), name="lf", namespace="llamafleet", is_install=True)
    finally:
        chart.close()
    return next(text for name, text in out.items() if name.endswith("NOTES.txt"))


def test_the_notes_find_the_api_however_it_is_exposed_and_end_with_a_curl() -> None:
    load_balancer = notes({"gateway": {"service": {"type": "LoadBalancer"}}})
    assert "{.status.loadBalancer.ingress[0].hostname}" in load_balancer  # AWS gives a hostname, not an IP
    assert "https://llm.example.com" in notes(
        {"gateway": {"ingress": {"enabled": True, "host": "llm.example.com", "tls": [{"secretName": "t"}]}}}
    )
    for text in (load_balancer, notes({})):
        assert text.rstrip().splitlines()[-1].strip().startswith('-d \'{"model"')
        assert 'curl "$LLAMAFLEET_URL/v1/chat/completions"' in text


def test_without_api_keys_the_chart_refuses_unless_anonymous_access_is_chosen() -> None:
    with pytest.raises(helm.HelmError, match="no API keys are configured"):
        render({}, bare=True)
    anonymous = {"gateway": {"allowAnonymous": True}}
    objects = render(anonymous, bare=True)
    assert not [
        o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-gateway")
    ]
    text = notes({"gateway": {"allowAnonymous": True, "apiKeys": {"keysFileSecret": ""}}})
    assert "WARNING: gateway.allowAnonymous is on" in text
    assert "no networkPolicy.gatewayFrom limits who does" in text


def test_an_optional_gateway_network_policy_admits_only_the_named_peers() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}]
    objects = render({"networkPolicy": {"gatewayFrom": peers}})
    (policy,) = [
        o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-gateway")
    ]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == peers
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"

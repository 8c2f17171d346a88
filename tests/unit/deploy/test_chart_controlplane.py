"""The control plane as the chart deploys it can be rolled and drained: every replica is Ready, the gRPC
Service selects the label only the leader's pod carries, the PodDisruptionBudget lets one pod go, a
rollout surges before it stops anything, and a renew deadline that is not shorter than the Lease is
refused by the chart and by the process."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import helm_python as helm
import pytest

from controlplane.operator.leader import LEADER_LABEL
from tests.unit.deploy.test_chart import render


def controlplane(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith("-controlplane"))


def test_the_grpc_service_selects_the_leaders_label_and_the_pod_names_itself() -> None:
    objects = render({})
    service, deployment = controlplane(objects, "Service"), controlplane(objects, "Deployment")
    assert service["spec"]["selector"][LEADER_LABEL] == "true"
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert LEADER_LABEL not in template_labels  # only the leader's process adds it, at run time
    assert {
        k: v for k, v in service["spec"]["selector"].items() if k != LEADER_LABEL
    }.items() <= template_labels.items()
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--kubernetes-pod-name=$(POD_NAME)" in args
    assert "--kubernetes-renew-deadline-s=7" in args


def test_a_rollout_surges_first_and_the_budget_lets_one_pod_go() -> None:
    objects = render({})
    deployment, budget = controlplane(objects, "Deployment"), controlplane(objects, "PodDisruptionBudget")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert budget["spec"] == {**budget["spec"], "maxUnavailable": 1}
    assert "minAvailable" not in budget["spec"]


@pytest.mark.parametrize(("lease", "renew"), [(10, 10), (5, 7), (3, 3)])
def test_a_renew_deadline_not_shorter_than_the_lease_is_refused_by_the_chart(lease: int, renew: int) -> None:
    values = {"controlplane": {"leaseDurationSeconds": lease, "renewDeadlineSeconds": renew}}
    with pytest.raises(helm.HelmError, match="renewDeadlineSeconds"):
        render(values)


def test_the_smallest_lease_the_schema_allows_renders_with_a_shorter_deadline() -> None:
    args = controlplane(
        render({"controlplane": {"leaseDurationSeconds": 3, "renewDeadlineSeconds": 2}}), "Deployment"
    )["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--kubernetes-renew-deadline-s=2" in args
    assert "--kubernetes-retry-period-s=1" in args


def test_the_process_refuses_a_renew_deadline_not_shorter_than_the_lease() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llamafleet.cli.main", "controlplane", "--source", "kubernetes",
         "--kubernetes-lease-duration-s", "3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "must be shorter than the lease duration" in result.stderr
    assert "Traceback" not in result.stderr

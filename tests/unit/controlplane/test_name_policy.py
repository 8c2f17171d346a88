"""Which namespaces may serve a model id (name squatting across namespaces, issue 28)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controlplane.operator.name_policy import NamePolicy
from controlplane.settings import KubernetesSettings


def test_only_the_listed_namespaces_serve_a_matching_id() -> None:
    policy = NamePolicy.parse(["prod-*=prod", "shared=prod,staging"])
    assert policy.refusal("prod-chat", "prod") == ""
    refused = policy.refusal("prod-chat", "dev")
    assert "may be served only from namespace(s) prod" in refused
    assert "'dev'" in refused
    assert policy.refusal("shared", "staging") == ""
    assert policy.refusal("shared", "dev")
    assert policy.refusal("experiment", "dev") == ""  # no rule: any watched namespace
    assert NamePolicy.parse([]).refusal("anything", "anywhere") == ""


@pytest.mark.parametrize("entry", ["prod", "=prod", "prod-*=", "prod-*= , "])
def test_a_malformed_rule_stops_the_process_at_start(entry: str) -> None:
    with pytest.raises(ValidationError, match="PATTERN=NAMESPACE"):
        KubernetesSettings(model_namespaces=[entry])

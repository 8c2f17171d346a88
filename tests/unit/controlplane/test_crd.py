"""The Model CRD: generated from ModelSpec, committed fresh, structural, and equivalent to the models file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.desired.model_file import load_models
from controlplane.domain import ModelSpec, ReplicaRecord, serves
from controlplane.operator import crd, resource
from controlplane.reconciler import Reconciler
from controlplane.scheduler.framework import Scheduler
from controlplane.state import views
from controlplane.state.cluster import ClusterState
from tests.support.kubeapi.schema import default, prune, validate
from tests.support.machines import machine_types, node_from
from tests.support.profiles import llama_like
from tools.gen_crd import CRD_PATH, render


def test_committed_crd_is_generated_from_the_current_spec() -> None:
    assert CRD_PATH.read_text() == render(), "the Model CRD is stale: run `make crd`"


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += walk(value, f"{path}[{i}]")
    return found


def test_the_schema_is_structural() -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert "anyOf" not in node, path
        assert "$ref" not in node, path
        assert node.get("additionalProperties") is not False, f"{path}: use pruning, not additionalProperties"
        if path.endswith(".properties") or "x-kubernetes-int-or-string" in node:
            continue
        if "properties" in node or "items" in node:
            assert node.get("type") in ("object", "array"), path


def test_crd_names_subresources_and_columns() -> None:
    definition = crd.crd()
    version = definition["spec"]["versions"][0]
    assert definition["metadata"]["name"] == "models.llamafleet.io"
    assert definition["spec"]["names"]["shortNames"] == ["lfm"]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert "status" in version["subresources"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready", "Desired", "Status", "Nodes", "GPU-Layers", "Age"
    ]  # fmt: skip
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["placement"]["enum"] == ["spread", "binpack"]
    assert spec["properties"]["contextLength"]["minimum"] == 64
    assert "name" not in spec["properties"], "the name is metadata.name"
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("allowSplit" in r and "gpuLayers" in r for r in rules)


SPEC_SCHEMA = crd.spec_schema()


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"source": "builtin:x", "contextLength": 10}, "contextLength"),
        ({"source": "builtin:x", "placement": "everywhere"}, "placement"),
        ({"source": ""}, "source"),
        ({"contextLength": 512}, "source"),
        (
            {"source": "builtin:x", "adapters": [{"name": "a", "path": "/a"}, {"name": "a", "path": "/b"}]},
            "adapters",
        ),
    ],
)
def test_the_schema_rejects_what_pydantic_rejects(spec: dict[str, Any], problem: str) -> None:
    problems = validate(default(dict(spec), SPEC_SCHEMA), SPEC_SCHEMA)
    assert any(problem in p for p in problems), problems
    with pytest.raises(ValueError, match=problem[:6]):
        ModelSpec.model_validate({"name": "x", **spec})


def test_defaults_from_the_schema_are_the_models_file_defaults() -> None:
    obj = {"metadata": {"name": "smol"}, "spec": default({"source": "builtin:smollm2-135m"}, SPEC_SCHEMA)}
    _, dropped = prune(obj["spec"], SPEC_SCHEMA)
    assert dropped == []
    assert resource.model_spec(obj) == ModelSpec(name="smol", source="builtin:smollm2-135m")


def test_a_models_file_entry_and_a_model_object_give_the_same_placement(tmp_path: Path) -> None:
    fields = {"source": "/m/small.gguf", "replicas": 2, "contextLength": 4096, "parallelSlots": 2,
              "placement": "binpack", "nodeSelector": {"zone": "a"}}  # fmt: skip
    fields["balancer"] = "prefix-affinity"
    file = tmp_path / "models.yaml"
    file.write_text(yaml.safe_dump({"models": [{"name": "small", **fields}]}))
    from_file = load_models(file)[0]
    from_object = resource.model_spec(
        {"metadata": {"name": "small"}, "spec": default(dict(fields), SPEC_SCHEMA)}
    )
    assert from_file == from_object

    def placed(spec: ModelSpec) -> dict[str, object]:
        state = ClusterState()
        machines = machine_types()
        for name in ("n1", "n2", "n3"):
            labels = {"zone": "a" if name != "n3" else "b"}
            held = {"/m/small.gguf": llama_like(n_layer=16)}
            state.nodes[name] = node_from(name, machines["cpu-64g"], held, labels=labels)
        state.set_models([spec])
        Reconciler(state, Scheduler(), node_grace_s=0).reconcile()
        by_node: dict[str, object] = {}
        for node in state.nodes:
            by_node[node] = sorted(
                (a.context_length, a.parallel_slots, a.n_gpu_layers, a.source)
                for a in views.assignments_for(state, node)[1].values()
            )
        return by_node

    assert placed(from_file) == placed(from_object)
    assert placed(from_file)["n3"] == []  # the node selector held in both


@pytest.mark.parametrize(
    "fields",
    [{"speculative": "draft"}, {"draftModel": {"source": "builtin:smollm2-135m"}},
     {"speculative": "ngram", "draftModel": {"source": "builtin:smollm2-135m"}}],
)  # fmt: skip
def test_a_draft_model_comes_with_speculative_draft_and_only_with_it(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="draftModel"):
        ModelSpec.model_validate({"name": "x", "source": "builtin:x", **fields})
    rules = [r["rule"] for r in SPEC_SCHEMA["x-kubernetes-validations"]]
    assert any("draftModel" in r and "speculative" in r for r in rules)  # the same rule for the API server


def test_a_draft_model_reaches_the_replica_spec_and_adoption_compares_it() -> None:
    spec = ModelSpec.model_validate({"name": "x", "source": "builtin:x", "speculative": "draft",
                                     "draftModel": {"source": "builtin:d", "sha256": "b" * 64}})  # fmt: skip
    assigned = views._assignment(ReplicaRecord("r1", "x", spec, "n1"))
    assert (assigned.speculative, assigned.draft_source, assigned.draft_sha256) == (
        "draft",
        "builtin:d",
        "b" * 64,
    )
    assert serves(assigned, spec)
    other = spec.model_copy(
        update={"draft_model": spec.draft_model.model_copy(update={"source": "builtin:e"})}
    )
    assert not serves(assigned, other)

"""Client model names → model and LoRA adapter, and the replicas that can serve them."""

from __future__ import annotations

from controlplane.domain import Endpoint, ModelRoute, RoutingTable

TABLE = RoutingTable(
    1,
    {
        "smol": ModelRoute(
            "smol",
            4,
            2048,
            (Endpoint("r1", "n1", "http://a", True, ("tone",)), Endpoint("r2", "n2", "http://b", True, ())),
        ),
        "llama3:8b": ModelRoute("llama3:8b", 4, 2048, (Endpoint("r3", "n1", "http://c", True),)),
    },
)


def test_plain_names_resolve_to_themselves_even_with_a_colon() -> None:
    assert TABLE.resolve("smol") == ("smol", None)
    assert TABLE.resolve("llama3:8b") == ("llama3:8b", None)


def test_base_colon_adapter_resolves_only_when_a_replica_has_it() -> None:
    assert TABLE.resolve("smol:tone") == ("smol", "tone")
    assert TABLE.resolve("smol:other") is None
    assert TABLE.resolve("missing:tone") is None


def test_adapter_requests_go_only_to_replicas_with_the_adapter() -> None:
    assert [e.replica_id for e in TABLE.ready_endpoints("smol")] == ["r1", "r2"]
    assert [e.replica_id for e in TABLE.ready_endpoints("smol", "tone")] == ["r1"]


def test_a_model_at_zero_resolves_the_adapters_its_spec_loads() -> None:
    at_zero = RoutingTable(
        1, {"smol": ModelRoute("smol", 2, 2048, (), holds=True, hold_s=60, adapters=("tone",))}
    )
    assert at_zero.resolve("smol:tone") == (
        "smol",
        "tone",
    )  # held until a replica with it is ready, not a 404
    assert at_zero.resolve("smol:other") is None

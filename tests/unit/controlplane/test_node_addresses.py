"""What a node reports about where it is reached is checked, not taken as sent (issue 28, item 4)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controlplane.domain import NodeStatus, ReplicaPhase
from controlplane.state import views
from controlplane.state.cluster import ClusterState
from controlplane.state.node_addresses import (
    EndpointRefused,
    NodeRefused,
    PeerFacts,
    advertised_from_peer,
    checked_endpoint,
    loopback_refusal,
    peer_host,
)
from tests.unit.controlplane.test_adoption import SPEC, hello, running


def test_an_endpoint_is_rebuilt_on_the_nodes_address_and_port_range() -> None:
    ports = (30000, 30099)
    assert checked_endpoint("http://10.0.0.5:30001", "10.0.0.5", ports, http=True) == "http://10.0.0.5:30001"
    assert checked_endpoint("http://10.0.0.5:30001/", "10.0.0.5", None, http=True) == "http://10.0.0.5:30001"
    assert checked_endpoint("10.0.0.5:50052", "10.0.0.5", None, http=False) == "10.0.0.5:50052"
    assert checked_endpoint("", "10.0.0.5", ports, http=True) == ""
    for reported in [
        "http://169.254.169.254:80",  # another host: cloud metadata
        "http://10.0.0.6:30001",  # another node
        "http://10.0.0.5:8080",  # outside the engine ports
        "https://10.0.0.5:30001",
        "http://user:pw@10.0.0.5:30001",
        "http://10.0.0.5:30001/v1/evil",
        "http://10.0.0.5:30001?x=1",
        "http://10.0.0.5",
        "10.0.0.5",
    ]:
        with pytest.raises(EndpointRefused):
            checked_endpoint(reported, "10.0.0.5", ports, http=True)
    with pytest.raises(EndpointRefused):
        checked_endpoint("10.0.0.6:50052", "10.0.0.5", None, http=False)


def test_the_advertised_address_must_be_where_the_node_connects_from() -> None:
    assert peer_host("ipv4:10.0.0.5:41234") == "10.0.0.5"
    assert peer_host("ipv6:%5B::1%5D:41234") == "::1"
    assert peer_host("ipv6:[fd00::5]:41234") == "fd00::5"
    assert advertised_from_peer("10.0.0.5", "ipv4:10.0.0.5:41234")
    assert advertised_from_peer("10.0.0.5", "ipv6:[::ffff:10.0.0.5]:41234")
    assert advertised_from_peer("localhost", "ipv4:127.0.0.1:41234")  # a name: any address it resolves to
    assert not advertised_from_peer("10.0.0.6", "ipv4:10.0.0.5:41234")
    assert not advertised_from_peer("169.254.169.254", "ipv4:10.0.0.5:41234")
    assert not advertised_from_peer("no-such-host.invalid", "ipv4:10.0.0.5:41234")


def test_a_replica_reported_at_another_host_is_never_routed() -> None:
    state = ClusterState(settle_s=0, engine_ports=(30000, 30099))
    state.set_models([SPEC.model_copy(update={"replicas": 1})])
    state.desired_synced = True
    state.node_connected(hello("a", replace(running("small-aaa"), endpoint="http://169.254.169.254:30001")))
    assert state.replicas["small-aaa"].endpoint == ""
    assert views.routing_table(state).ready_endpoints("small") == []
    status = NodeStatus(0, 0, [running("small-aaa")], {})  # at 127.0.0.1:30001, the node's own address
    state.node_status("a", state.nodes["a"].session, status)
    assert [e.url for e in views.routing_table(state).ready_endpoints("small")] == ["http://127.0.0.1:30001"]


def test_a_running_replica_is_adopted_only_where_the_node_selector_matches() -> None:
    spec = SPEC.model_copy(update={"replicas": 1, "node_selector": {"tier": "gpu"}})
    state = ClusterState(settle_s=0)
    state.set_models([spec])
    state.desired_synced = True
    state.node_connected(hello("a", running("small-aaa", spec)))  # labels {}: placement never put it there
    assert "small-aaa" not in state.replicas
    labelled = hello("b", running("small-bbb", spec))
    labelled.labels["tier"] = "gpu"
    state.node_connected(labelled)
    assert state.replicas["small-bbb"].adopted
    assert state.replicas["small-bbb"].phase == ReplicaPhase.READY


async def test_a_loopback_address_advertised_from_another_host_is_refused_whatever_the_check() -> None:
    for facts in (PeerFacts(check=True), PeerFacts(check=False)):
        with pytest.raises(NodeRefused, match=r"loopback address, but connects from 10\.0\.0\.7.*"
                                              r"--supervisor-advertise-host 10\.0\.0\.7"):  # fmt: skip
            await facts.verify("node-b", "127.0.0.1", {}, "ipv4:10.0.0.7:41234")
        assert await facts.verify("node-a", "127.0.0.1", {}, "ipv4:127.0.0.1:41234") == {}  # one machine
    assert loopback_refusal("n", "::1", "ipv6:[::1]:5000") is None
    assert loopback_refusal("n", "10.0.0.7", "ipv4:10.0.0.7:5000") is None
    assert (
        loopback_refusal("n", "node-b.example", "ipv4:10.0.0.7:5000") is None
    )  # a name: the address check's

"""`llamafleet nodes`: a node's Kubernetes Node state crosses the admin API and reaches the table."""

from __future__ import annotations

from controlplane.api.convert import node_from_pb, node_to_pb
from controlplane.domain import NodeRecord
from llamafleet.cli.cluster_admin import format_nodes


def test_the_kubernetes_node_state_crosses_the_admin_api() -> None:
    node = NodeRecord("n1", connected=True, unschedulable=True, draining="karpenter.sh/disrupted")
    back = node_from_pb(node_to_pb(node, replicas=0))
    assert (back.unschedulable, back.draining, back.deleted) == (True, "karpenter.sh/disrupted", False)
    gone = node_from_pb(node_to_pb(NodeRecord("n2", deleted=True, cordoned=True), replicas=0))
    assert (gone.deleted, gone.cordoned) == (True, True)


def test_the_table_says_why_nothing_new_is_placed_on_a_node() -> None:
    table = format_nodes(
        [
            NodeRecord("plain", connected=True),
            NodeRecord("cordoned", connected=True, unschedulable=True),
            NodeRecord("tainted", connected=True, draining="llamafleet.io/drain"),
            NodeRecord("gone", deleted=True, cordoned=True),
        ]
    )
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert "cordon" not in rows["plain"]
    assert "drain" not in rows["plain"]
    assert "yes, Kubernetes Node cordoned" in rows["cordoned"]
    assert "yes, draining (llamafleet.io/drain)" in rows["tainted"]
    assert "no, cordoned, Kubernetes Node deleted" in rows["gone"]

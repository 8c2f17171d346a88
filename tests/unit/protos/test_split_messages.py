"""A split's Assign messages survive both sides' conversions: the control plane's Assignment, the
agent's ReplicaSpec, and back (the agent reports the spec it runs)."""

from __future__ import annotations

from controlplane.agents import convert as controlplane_side
from controlplane.domain import Assignment, RemotePartRef, RpcLeaseRef
from nodeagent.domain import Role
from nodeagent.uplink import convert as agent_side


def test_a_worker_lease_and_a_heads_remote_parts_round_trip() -> None:
    worker = Assignment("r1-rpc0-ab12", "big", "/m/big.gguf", "", 512, 1, -1, 1, role="rpc_worker",
                        lease=RpcLeaseRef("node-a", "10.0.0.2", "r1", 0, 13))  # fmt: skip
    head = Assignment("r1", "big", "/m/big.gguf", "", 512, 1, -1, 1, remote_parts=(
        RemotePartRef("node-b", "10.0.0.3:50052", 0, 13), RemotePartRef("node-c", "10.0.0.4:50053", 14, 25),
    ))  # fmt: skip
    for sent in (worker, head):
        received = agent_side.replica_spec(controlplane_side.assign(7, sent).assign.replica)
        assert received.role == (Role.RPC_WORKER if sent.lease else Role.ENGINE)
        reported = controlplane_side.replica_spec(agent_side.replica_spec_to_pb(received))
        assert reported == sent

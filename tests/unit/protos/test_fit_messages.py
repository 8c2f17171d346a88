"""Memory-fit messages across the wire: what an agent sends is what the control plane estimates with."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from controlplane.agents import convert as cp_convert
from controlplane.api import convert as api_convert
from llamafleet.fit.components import ContextParams
from llamafleet.fit.recommend import Gpu, NodeResources, recommend
from nodeagent.gguf.model_facts import read_model_facts
from nodeagent.uplink import convert as agent_convert
from protos.gen.llamafleet.agent.v1 import agent_pb2 as pb
from tests.support.profiles import GIB


def test_a_real_profile_survives_agent_to_control_plane(smollm2_path: Path) -> None:
    profile = read_model_facts(smollm2_path).profile()
    wire = pb.CachedModel(source="builtin:smollm2-135m", profile=agent_convert.model_profile(profile))
    received = cp_convert.cached_model(pb.CachedModel.FromString(wire.SerializeToString()))
    assert received.profile == profile
    assert received.error == ""


def test_an_impossible_profile_arrives_as_its_error(smollm2_path: Path) -> None:
    profile = replace(read_model_facts(smollm2_path).profile(), file_size=1000)
    wire = pb.CachedModel(source="x", profile=agent_convert.model_profile(profile))
    received = cp_convert.cached_model(wire)
    assert received.profile is None
    assert "impossible model header" in received.error


def test_recommendations_round_trip_through_the_cluster_api(smollm2_path: Path) -> None:
    profile = read_model_facts(smollm2_path).profile()
    for node in (NodeResources("n", 8 * GIB, (Gpu("CUDA0", 1 * GIB),)), NodeResources("tiny", 1 << 20)):
        rec = recommend(profile, ContextParams(2048, 2), node)
        back, error = api_convert.recommendation_from_pb(api_convert.recommendation_to_pb(rec))
        assert error == ""
        assert back is not None
        assert back.to_dict() == rec.to_dict()

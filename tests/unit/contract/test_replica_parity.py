"""The replica contract is written once: the type, its protobuf message and the engine's options
agree field for field, and a spec survives the wire unchanged (llamafleet/contract/replica.py)."""

from __future__ import annotations

import dataclasses
import typing

from google.protobuf.descriptor import FieldDescriptor

from llamafleet.contract import replica_pb
from llamafleet.contract.replica import (
    DEFAULT_CACHE_RAM_MIB,
    ENGINE_OPTIONS,
    AdapterSpec,
    RemotePart,
    ReplicaSpec,
    Role,
    RpcLease,
)
from nodeagent.engine.__main__ import EngineOptions
from protos.gen.llamafleet.agent.v1 import agent_pb2 as pb

PAIRS = [(ReplicaSpec, pb.ReplicaSpec), (AdapterSpec, pb.AdapterSpec), (RemotePart, pb.RemotePart),
         (RpcLease, pb.RpcLease)]  # fmt: skip


def test_every_message_field_has_its_counterpart_and_back() -> None:
    for kind, message in PAIRS:
        theirs = {f.name for f in message.DESCRIPTOR.fields}
        mine = {f.name for f in dataclasses.fields(kind)}
        assert theirs == mine, f"{kind.__name__} and {message.DESCRIPTOR.full_name} differ: {theirs ^ mine}"


def test_defaults_agree_where_the_wire_cannot_tell_unset_from_zero() -> None:
    """A proto3 scalar left unset reads as its zero value: a type default other than zero must be sent
    (the control plane sets every field) — listed here so that a new one is a decision."""
    nonzero = {}
    for f in dataclasses.fields(ReplicaSpec):
        if f.default is dataclasses.MISSING or f.name in ("role", "lease", "adapters", "remote_parts"):
            continue
        if f.name in replica_pb.OPTIONAL_FIELDS:  # with presence: unset is told from 0 (the next test)
            continue
        descriptor = pb.ReplicaSpec.DESCRIPTOR.fields_by_name[f.name]
        if f.default != descriptor.default_value:
            nonzero[f.name] = f.default
    assert nonzero == {"context_length": 2048, "parallel_slots": 4, "n_gpu_layers": -1, "pooling": "auto",
                       "speculative": "off"}  # fmt: skip
    assert pb.ReplicaSpec.DESCRIPTOR.fields_by_name["role"].type == FieldDescriptor.TYPE_ENUM


def test_a_cache_ram_left_unset_is_the_engines_default_and_zero_stays_off() -> None:
    """An Assign from a control plane that predates cacheRam keeps the engine's default cache; 0 (off)
    is sent as such, not mistaken for unset."""
    unset = pb.ReplicaSpec(replica_id="r1", model="m", source="builtin:x")
    assert not unset.HasField("cache_ram")
    assert replica_pb.from_pb(unset).cache_ram == DEFAULT_CACHE_RAM_MIB
    off = replica_pb.to_pb(ReplicaSpec("r1", "m", "builtin:x", cache_ram=0))
    assert off.HasField("cache_ram")
    assert replica_pb.from_pb(off).cache_ram == 0


def test_a_full_spec_and_a_default_one_survive_the_wire() -> None:
    worker = ReplicaSpec(
        "r1-rpc0", "m", "hf://org/repo:Q4_K_M", "a" * 64, 4096, 8, 20, 6, True,
        (AdapterSpec("tone", "/a/tone.gguf", 0.5), AdapterSpec("style", "/a/style.gguf")),
        (RemotePart("node-b", "10.0.0.3:50052", 0, 13),), Role.RPC_WORKER,
        RpcLease("node-a", "10.0.0.2", "r1", 0, 13), '{"temperature":0.2}', "{{ messages }}", "mean", "draft",
        "hf://org/draft:Q4_0", "c" * 64, 256,
    )  # fmt: skip
    for spec in (worker, ReplicaSpec("r1", "m", "builtin:smollm2-135m")):
        assert replica_pb.from_pb(replica_pb.to_pb(spec)) == spec


def test_each_field_the_engine_takes_is_an_engine_option_of_the_same_name_and_type() -> None:
    options = EngineOptions.model_fields
    hints = typing.get_type_hints(ReplicaSpec)
    defaults = {f.name: f.default for f in dataclasses.fields(ReplicaSpec)}
    for name in ENGINE_OPTIONS:
        assert name in options, f"ReplicaSpec.{name} has no EngineOptions.{name}"
        assert options[name].annotation == hints[name], name
        assert options[name].default == defaults[name], f"{name}: the engine's default differs"


def test_the_engine_reads_back_exactly_what_the_agent_passes() -> None:
    import argparse

    from llamafleet.contract.replica import engine_arguments
    from llamafleet.core.settings_cli import add_settings_arguments, settings_from_args
    from nodeagent.engine.__main__ import EngineSettings

    for spec in (
        ReplicaSpec("r1", "m", "builtin:x"),
        ReplicaSpec(
            "r1",
            "m",
            "builtin:x",
            "",
            512,
            2,
            12,
            3,
            True,
            request_defaults='{"top_k":5}',
            pooling="cls",
            speculative="ngram",
            cache_ram=0,
        ),
    ):
        parser = argparse.ArgumentParser()
        add_settings_arguments(parser, EngineSettings)
        read = settings_from_args(EngineSettings, parser.parse_args(engine_arguments(spec))).engine
        assert {n: getattr(read, n) for n in ENGINE_OPTIONS} == {n: getattr(spec, n) for n in ENGINE_OPTIONS}

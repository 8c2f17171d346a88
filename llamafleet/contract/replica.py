"""The replica contract: what the control plane asks a node to run for one replica (an Assign), and
what the node reports back as the spec it runs (adoption compares it with the desired Model).

Field names are the protobuf message's (``llamafleet.agent.v1.ReplicaSpec``) and, for every field
that configures the engine, the engine's option (``nodeagent/engine/__main__.py: EngineOptions``):
tests/unit/contract/test_replica_parity.py fails when one side has a field the other lacks.
Adding a field: the proto, this type, and the code that uses it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

# How embeddings pool tokens: auto takes the GGUF's (else mean); rank: a reranker (/v1/rerank).
Pooling = Literal["auto", "mean", "cls", "last", "rank"]
# Speculative decoding: off; ngram — drafts from the sequence's own context; draft — drafts by a
# smaller model of the same vocabulary (draft_source). Verified in the batched step
# (nodeagent/engine/speculative.py, draft_model.py).
Speculative = Literal["off", "ngram", "draft"]
# MiB of host memory an engine keeps for prompt states saved from its slots (llama-server's
# --cache-ram; nodeagent/engine/host_cache.py): a Model's cacheRam, the engine's --cache-ram, and
# what placement counts on top of llama.cpp's own memory, at this cap (it fills to it under load).
DEFAULT_CACHE_RAM_MIB = 1024


class Role(enum.Enum):
    ENGINE = "engine"
    RPC_WORKER = "rpc_worker"  # holds a layer range of a split model for one head (docs/SPLIT.md)


@dataclass(frozen=True)
class AdapterSpec:
    """A LoRA adapter GGUF on the node that the engine loads at start; clients pick ``<model>:<name>``."""

    name: str
    path: str
    scale: float = 1.0


@dataclass(frozen=True)
class RemotePart:
    """A layer range of a split model held by an RPC worker on another node, reached at its gate."""

    node_id: str
    endpoint: str  # host:port of the worker's gate
    first_layer: int
    last_layer: int


@dataclass(frozen=True)
class RpcLease:
    """The one head an RPC worker serves; its gate refuses every other peer."""

    head_node_id: str
    head_address: str
    replica_id: str
    first_layer: int = 0
    last_layer: int = 0


@dataclass(frozen=True)
class ReplicaSpec:
    replica_id: str
    model: str
    source: str
    sha256: str = ""
    context_length: int = 2048
    parallel_slots: int = 4
    n_gpu_layers: int = -1
    n_threads: int = 0  # 0: the node's usable CPUs, shared among its replicas
    embeddings: bool = False
    adapters: tuple[AdapterSpec, ...] = ()
    remote_parts: tuple[RemotePart, ...] = ()  # a split head: ranges other nodes' workers hold, in order
    role: Role = field(default=Role.ENGINE)
    lease: RpcLease | None = None  # an RPC worker: the one head it serves
    request_defaults: str = ""  # JSON (RequestDefaults.as_json()): the engine's --request-defaults
    chat_template: str = ""  # Jinja replacing the GGUF's (the engine's --chat-template-file); "": its own
    pooling: Pooling = "auto"  # embedding pooling (the engine's --pooling)
    speculative: Speculative = "off"  # the engine's --speculative
    draft_source: str = ""  # speculative "draft": the draft model, fetched like source (--draft-model-path)
    draft_sha256: str = ""  # the draft file's sha256, checked when set
    cache_ram: int = DEFAULT_CACHE_RAM_MIB  # MiB for saved prompt states (the engine's --cache-ram; 0: off)


# The fields the engine takes as options of the same name (the rest: what the agent does with them).
ENGINE_OPTIONS = ("context_length", "parallel_slots", "n_gpu_layers", "n_threads", "embeddings",
                  "request_defaults", "pooling", "speculative", "cache_ram")  # fmt: skip


def engine_arguments(spec: ReplicaSpec) -> list[str]:
    """The engine's command-line options for ``spec``'s ENGINE_OPTIONS: ``--name-with-dashes VALUE``;
    a bool is a bare flag when true, an empty string is left out (the engine's default)."""
    argv: list[str] = []
    for name in ENGINE_OPTIONS:
        value = getattr(spec, name)
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif value != "":
            argv += [flag, str(value)]
    return argv

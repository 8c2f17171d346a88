"""The whole estimate: every buffer llama.cpp allocates, per device, for one model and one set of parameters.

``estimate(profile, params, offload)`` places the layers as llama.cpp does (the output layer
first, then the repeating layers from the last one down; across several GPUs or RPC workers by
``tensor_split``, whose default is each device's free memory) and sums each device's weights,
KV cache, compute buffer and output buffer. Host memory is split in two: ``ram_bytes`` that
llama.cpp allocates, and ``page_cache_bytes``, the memory-mapped weights, which the OS keeps in
its page cache (they must stay resident to run at speed, but are shared and evictable).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from llamafleet.fit.components import (
    ContextParams,
    kv_cache_bytes,
    layer_weight_bytes,
    offloaded_layers,
    output_bytes,
    repacked_bytes,
)
from llamafleet.fit.compute import compute_bytes
from llamafleet.fit.profile import ModelProfile

# A GPU runtime's own context (CUDA: driver, cuBLAS workspace, kernels) is not a llama.cpp buffer
# but takes VRAM all the same. A planning reserve from llama.cpp's and Ollama's practice, not
# measured here (this project's CI has no GPU).
GPU_RUNTIME_OVERHEAD = 256 * 1024 * 1024
CPU = "CPU"


@dataclass(frozen=True)
class Target:
    """A device that takes offloaded layers: a GPU of this node or an RPC worker."""

    name: str
    kind: str = "gpu"  # "gpu" | "rpc"
    split: float = 1.0  # llama.cpp's tensor_split share; pass free memory for its default split


@dataclass(frozen=True)
class Offload:
    n_gpu_layers: int = 0  # -1: all layers, output included
    targets: tuple[Target, ...] = ()
    use_mmap: bool = True
    cpu_repack_types: frozenset[str] = frozenset()  # components.repack_types(the node's CPU flags)


@dataclass(frozen=True)
class DeviceEstimate:
    name: str
    kind: str  # "cpu" | "gpu" | "rpc"
    weights_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0
    output_bytes: int = 0
    overhead_bytes: int = 0
    layers: tuple[int, ...] = ()  # blocks held here; n_layer means the output layer

    @property
    def buffers_bytes(self) -> int:
        """What llama.cpp itself allocates on this device (what its log reports)."""
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.output_bytes

    @property
    def total_bytes(self) -> int:
        return self.buffers_bytes + self.overhead_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "weights_bytes": self.weights_bytes,
            "kv_bytes": self.kv_bytes,
            "compute_bytes": self.compute_bytes,
            "output_bytes": self.output_bytes,
            "overhead_bytes": self.overhead_bytes,
            "total_bytes": self.total_bytes,
            "layers": _ranges(self.layers),
        }


@dataclass(frozen=True)
class Estimate:
    devices: tuple[DeviceEstimate, ...]
    ram_bytes: int  # host memory llama.cpp allocates, memory-mapped weights excluded
    vram_bytes: int  # every local GPU's total
    rpc_bytes: int  # held by RPC workers on other nodes
    page_cache_bytes: int  # memory-mapped weights on the CPU
    n_gpu_layers: int  # layers actually offloaded (0 without targets)
    params: ContextParams
    offload: Offload = field(default_factory=Offload)

    @property
    def host_bytes(self) -> int:
        """Host memory the model occupies when running at speed: allocations plus its mapped weights."""
        return self.ram_bytes + self.page_cache_bytes

    def device(self, name: str) -> DeviceEstimate:
        return next(d for d in self.devices if d.name == name)

    def to_dict(self) -> dict[str, Any]:
        p = self.params
        return {
            "devices": [d.to_dict() for d in self.devices],
            "ram_bytes": self.ram_bytes,
            "vram_bytes": self.vram_bytes,
            "rpc_bytes": self.rpc_bytes,
            "page_cache_bytes": self.page_cache_bytes,
            "params": {
                "context_length": p.n_ctx_per_seq,
                "parallel": p.n_seq,
                "n_batch": p.n_batch,
                "n_ubatch": p.n_ubatch,
                "type_k": p.type_k,
                "type_v": p.type_v,
                "flash_attn": p.flash_attn,
                "kv_unified": p.unified,
                "swa_full": p.swa_full,
                "embeddings": p.embeddings,
                "prompt_cache_bytes": p.prompt_cache_bytes,
                "n_gpu_layers": self.n_gpu_layers,
                "use_mmap": self.offload.use_mmap,
                "tensor_split": [t.split for t in self.offload.targets],
            },
        }


def _ranges(layers: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) → "0-2,5"."""
    parts: list[str] = []
    for il in layers:
        if parts and il == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{il}"
        else:
            parts.append(str(il))
    return ",".join(parts)


def assign_layers(profile: ModelProfile, offload: Offload) -> dict[int, int]:
    """Layer index (n_layer = output) → target index, for the offloaded layers; llama.cpp's rule."""
    if not offload.targets:
        return {}
    chosen = offloaded_layers(profile, offload.n_gpu_layers)
    total = sum(t.split for t in offload.targets)
    if total <= 0:
        raise ValueError("tensor_split must give some device a positive share")
    points, running = [], 0.0
    for t in offload.targets:
        running += t.split
        points.append(running / total)
    last = len(offload.targets) - 1
    return {il: min(bisect.bisect_right(points, (il - chosen.start) / len(chosen)), last) for il in chosen}


def estimate(profile: ModelProfile, params: ContextParams, offload: Offload | None = None) -> Estimate:
    params.check()
    offload = offload or Offload()
    placed = assign_layers(profile, offload)
    n_layer = profile.n_layer
    host_layers = tuple(il for il in range(n_layer + 1) if il not in placed)
    mapped = profile.input_weight_bytes + sum(layer_weight_bytes(profile, il) for il in host_layers)
    repacked = repacked_bytes(profile, host_layers, offload.cpu_repack_types)
    devices: list[DeviceEstimate] = []
    for index, target in enumerate(offload.targets):
        layers = tuple(il for il, t in placed.items() if t == index)
        has_output = n_layer in layers
        weights = sum(layer_weight_bytes(profile, il) for il in layers)
        if has_output and profile.tied_output:
            weights += profile.token_embd_bytes  # the output layer's own copy of the embeddings
        devices.append(
            DeviceEstimate(
                name=target.name,
                kind=target.kind,
                weights_bytes=weights,
                kv_bytes=kv_cache_bytes(profile, params, layers),
                compute_bytes=compute_bytes(profile, params, layers, has_output, has_input=False),
                overhead_bytes=GPU_RUNTIME_OVERHEAD if target.kind == "gpu" else 0,
                layers=layers,
            )
        )
    cpu_compute = compute_bytes(profile, params, host_layers, n_layer in host_layers, has_input=True)
    cpu = DeviceEstimate(
        name=CPU,
        kind="cpu",
        # mapped: the mapping still spans the repacked tensors, whose re-laid-out copy is extra;
        # read into memory: they are in the repack buffer instead of the plain one
        weights_bytes=mapped + (repacked if offload.use_mmap else 0),
        kv_bytes=kv_cache_bytes(profile, params, host_layers),
        compute_bytes=cpu_compute,
        output_bytes=output_bytes(profile, params),
        overhead_bytes=params.prompt_cache_bytes,  # the engine's, beside llama.cpp's buffers
        layers=tuple(il for il in host_layers),
    )
    page_cache = mapped if offload.use_mmap else 0
    return Estimate(
        devices=(cpu, *devices),
        ram_bytes=cpu.total_bytes - page_cache,
        vram_bytes=sum(d.total_bytes for d in devices if d.kind == "gpu"),
        rpc_bytes=sum(d.total_bytes for d in devices if d.kind == "rpc"),
        page_cache_bytes=page_cache,
        n_gpu_layers=len(placed),
        params=params,
        offload=offload,
    )

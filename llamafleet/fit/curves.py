"""Memory by GPU layer count, for every count at once: what the scheduler compares against many nodes.

``offload_curves`` gives, for n_gpu_layers g = 0 … n_layer + 1, the host memory (allocations
plus mapped weights, as ``Estimate.host_bytes``) and each device's total (as
``DeviceEstimate.total_bytes``) that ``estimate`` would report with the layers split over the
devices by ``shares``. It follows the same rules (llama.cpp's layer placement, the output layer
first, KV beside its layer, compute phases per device) with prefix sums and one matrix of
layer → device per g, so a model's whole curve costs about what one estimate does.
tests/unit/llamafleet/test_fit_curves.py checks it against ``estimate`` point by point.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from llamafleet.fit.components import (
    ContextParams,
    attention_phase_bytes,
    input_compute_bytes,
    layer_kv_bytes,
    layer_weight_bytes,
    output_bytes,
    output_phase_bytes,
)
from llamafleet.fit.estimate import GPU_RUNTIME_OVERHEAD
from llamafleet.fit.profile import ModelProfile


@dataclass(frozen=True)
class OffloadCurves:
    host: np.ndarray  # [n_layer + 2] (1 without devices): host bytes with g layers offloaded
    device: np.ndarray  # [n_layer + 2, devices]: each device's total bytes with g layers offloaded


@functools.lru_cache(maxsize=1024)
def _per_layer(profile: ModelProfile, params: ContextParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, KV and attention-phase bytes per layer (the output layer last, without KV)."""
    n = profile.n_layer
    weights = np.array([layer_weight_bytes(profile, il) for il in range(n + 1)], dtype=np.float64)
    kv = np.array([layer_kv_bytes(profile, params, il) for il in range(n)] + [0], dtype=np.float64)
    attention = np.array(
        [attention_phase_bytes(profile, params, il) for il in range(n)] + [0], dtype=np.float64
    )
    for array in (weights, kv, attention):
        array.setflags(write=False)
    return weights, kv, attention


@functools.lru_cache(maxsize=4096)
def offload_curves(
    profile: ModelProfile,
    params: ContextParams,
    shares: tuple[float, ...],
    kinds: tuple[str, ...],
    repack: frozenset[str] = frozenset(),
    use_mmap: bool = True,
) -> OffloadCurves:
    """Curves for offloading to devices with these tensor_split ``shares`` and kinds ("gpu" | "rpc").

    Without devices nothing can be offloaded: the curves have the one point g = 0.
    """
    n = profile.n_layer
    layers = np.arange(n + 1)
    weights, kv, attention = _per_layer(profile, params)
    repacked = np.zeros(n + 1)
    for kind, layer, size in profile.repack_candidates:
        if kind in repack and layer <= n:
            repacked[layer] += size
    out_phase = float(output_phase_bytes(profile, params))
    counts = np.arange(n + 2 if shares else 1)  # g
    starts = n + 1 - counts  # first offloaded layer for each g
    on_gpu = layers[None, :] >= starts[:, None]  # [g, layer]

    # host: input layer, CPU layers' weights (+ the repacked copy when mapped), KV, compute, output
    cpu = ~on_gpu
    host = profile.input_weight_bytes + (cpu * weights).sum(1) + (cpu[:, :n] * kv[:n]).sum(1)
    if use_mmap:
        host = host + (cpu * repacked).sum(1)
    cpu_attention = np.where(cpu[:, :n], attention[:n], 0).max(1, initial=0)
    cpu_compute = np.maximum(cpu_attention, np.where(cpu[:, n], out_phase, 0))
    cpu_compute = np.where(
        counts > 0, np.maximum(cpu_compute, input_compute_bytes(profile, params)), cpu_compute
    )
    host = host + cpu_compute + output_bytes(profile, params)

    host.setflags(write=False)
    if not shares:
        return OffloadCurves(host, np.zeros((1, 0)))
    # devices: llama.cpp's split points over the g offloaded layers
    points = np.cumsum(shares) / sum(shares)
    with np.errstate(divide="ignore", invalid="ignore"):
        position = (layers[None, :] - starts[:, None]) / np.maximum(counts[:, None], 1)
    device_of = np.minimum(np.searchsorted(points, position, side="right"), len(shares) - 1)
    device = np.zeros((len(counts), len(shares)))
    for d, kind in enumerate(kinds):
        mine = on_gpu & (device_of == d)
        total = (mine * weights).sum(1) + (mine[:, :n] * kv[:n]).sum(1)
        holds_output = mine[:, n]
        if profile.tied_output:
            total = total + np.where(holds_output, profile.token_embd_bytes, 0)
        compute = np.maximum(
            np.where(mine[:, :n], attention[:n], 0).max(1, initial=0), np.where(holds_output, out_phase, 0)
        )
        has_layers = mine.any(1)
        total = total + np.where(has_layers, compute, 0)
        if kind == "gpu":
            total = total + np.where(counts > 0, GPU_RUNTIME_OVERHEAD, 0)
        device[:, d] = total
    device.setflags(write=False)
    return OffloadCurves(host, device)

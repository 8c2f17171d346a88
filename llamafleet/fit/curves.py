"""Memory by GPU layer count, for every count at once: what the scheduler compares against many nodes.

``offload_curves`` gives, for n_gpu_layers g = 0 … n_layer + 1, the host memory (allocations
plus mapped weights, as ``Estimate.host_bytes``) and each device's total (as
``DeviceEstimate.total_bytes``) that ``estimate`` would report with the layers split over the
devices by ``shares``. It follows the same rules (llama.cpp's layer placement, the output layer
first, KV beside its layer, each device's compute graph) with prefix sums and one matrix of
layer → device per g; compute buffers are shared by every model of one shape, so a model's
whole curve costs about what one estimate does.
tests/unit/llamafleet/test_fit_curves.py checks it against ``estimate`` point by point.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from llamafleet.fit.components import ContextParams, layer_kv_bytes, layer_weight_bytes, output_bytes
from llamafleet.fit.compute import cycle_length, graph_dims, is_uniform, range_compute_bytes, uniform_range
from llamafleet.fit.estimate import GPU_RUNTIME_OVERHEAD
from llamafleet.fit.forward_graph import GraphDims
from llamafleet.fit.profile import ModelProfile


@dataclass(frozen=True)
class OffloadCurves:
    host: np.ndarray  # [n_layer + 2] (1 without devices): host bytes with g layers offloaded
    device: np.ndarray  # [n_layer + 2, devices]: each device's total bytes with g layers offloaded


@functools.lru_cache(maxsize=1024)
def _per_layer(profile: ModelProfile, params: ContextParams) -> tuple[np.ndarray, np.ndarray]:
    """Weights and KV bytes per layer (the output layer last, without KV)."""
    n = profile.n_layer
    weights = np.array([layer_weight_bytes(profile, il) for il in range(n + 1)], dtype=np.float64)
    kv = np.array([layer_kv_bytes(profile, params, il) for il in range(n)] + [0], dtype=np.float64)
    for array in (weights, kv):
        array.setflags(write=False)
    return weights, kv


def _placement(n: int, shares: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every g (0 … n + 1; only 0 without devices): g, whether each layer (n = the output
    layer) is offloaded [g, layer], and the device it goes to [g, layer] (llama.cpp's split points)."""
    layers = np.arange(n + 1)
    counts = np.arange(n + 2 if shares else 1)
    starts = n + 1 - counts  # first offloaded layer for each g
    on_gpu = layers[None, :] >= starts[:, None]
    if not shares:
        return counts, on_gpu, np.zeros_like(on_gpu, dtype=np.int64)
    points = np.cumsum(shares) / sum(shares)
    with np.errstate(divide="ignore", invalid="ignore"):
        position = (layers[None, :] - starts[:, None]) / np.maximum(counts[:, None], 1)
    device_of = np.minimum(np.searchsorted(points, position, side="right"), len(shares) - 1)
    return counts, on_gpu, device_of


def _ranges(held: np.ndarray, n: int) -> list[tuple[int, int, bool]]:
    """Per row of ``held`` ([g, layer], contiguous): its blocks [first, stop) and whether it has
    the output layer (layer n)."""
    any_held = held.any(1)
    first = np.where(any_held, held.argmax(1), 0)
    stop = np.where(any_held, held.shape[1] - held[:, ::-1].argmax(1), 0)
    return [(int(f), int(min(s, n)), bool(s > n)) for f, s in zip(first, stop, strict=True)]


@functools.lru_cache(maxsize=4096)
def _compute_by_count(
    dims: GraphDims, params: ContextParams, shares: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Compute buffers for every g: the host's [g] and each device's [g, device]. Shared by every
    model of one shape (weights do not enter the graph); each distinct graph is replayed once."""
    n = dims.n_layer
    counts, on_gpu, device_of = _placement(n, shares)
    known: dict[tuple[int, int, bool, bool], int] = {}
    uniform, cycle = is_uniform(dims), cycle_length(dims.swa_layers)

    def compute(first: int, stop: int, has_output: bool, has_input: bool) -> int:
        canonical = uniform_range(n, cycle, first, stop) if uniform else (first, stop)
        key = (*canonical, has_output, has_input)
        if key not in known:
            known[key] = range_compute_bytes(dims, params, first, stop, has_output, has_input)
        return known[key]

    host = np.array([compute(f, s, out, True) for f, s, out in _ranges(~on_gpu, n)], dtype=np.float64)
    device = np.zeros((len(counts), len(shares)))
    for d in range(len(shares)):
        device[:, d] = [compute(f, s, out, False) for f, s, out in _ranges(on_gpu & (device_of == d), n)]
    for array in (host, device):
        array.setflags(write=False)
    return host, device


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
    weights, kv = _per_layer(profile, params)
    repacked = np.zeros(n + 1)
    for kind, layer, size in profile.repack_candidates:
        if kind in repack and layer <= n:
            repacked[layer] += size
    counts, on_gpu, device_of = _placement(n, shares)

    # host: input layer, CPU layers' weights (+ the repacked copy when mapped), KV, compute, output
    cpu = ~on_gpu
    host = profile.input_weight_bytes + (cpu * weights).sum(1) + (cpu[:, :n] * kv[:n]).sum(1)
    if use_mmap:
        host = host + (cpu * repacked).sum(1)
    host_compute, device_compute = _compute_by_count(graph_dims(profile), params, shares)
    host = host + host_compute + output_bytes(profile, params)

    host.setflags(write=False)
    if not shares:
        return OffloadCurves(host, np.zeros((1, 0)))
    device = np.zeros((len(counts), len(shares)))
    for d, kind in enumerate(kinds):
        mine = on_gpu & (device_of == d)
        total = (mine * weights).sum(1) + (mine[:, :n] * kv[:n]).sum(1)
        holds_output = mine[:, n]
        if profile.tied_output:
            total = total + np.where(holds_output, profile.token_embd_bytes, 0)
        total = total + device_compute[:, d]
        if kind == "gpu":
            total = total + np.where(counts > 0, GPU_RUNTIME_OVERHEAD, 0)
        device[:, d] = total
    device.setflags(write=False)
    return OffloadCurves(host, device)

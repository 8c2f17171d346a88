"""Memory by GPU layer count, for every count at once: what the scheduler compares against many nodes.

``offload_curves`` gives, for n_gpu_layers g = 0 … n_layer + 1, the host memory (allocations
plus mapped weights, as ``Estimate.host_bytes``) and each device's total (as
``DeviceEstimate.total_bytes``) that ``estimate`` would report with the layers split over the
devices by ``shares``. It follows the same rules (llama.cpp's layer placement, the output layer
first, KV beside its layer, each device's compute graph) with prefix sums over each holder's
layer range for every g (the ranges are shared by every model of one depth and split; compute
buffers by every model of one shape), so a model's whole curve costs about what one estimate does.
tests/unit/llamafleet/test_fit_curves.py checks it against ``estimate`` point by point.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from llamafleet.fit.components import ContextParams, layer_kv_bytes, layer_weight_bytes, output_bytes
from llamafleet.fit.compute import canonical_range_bytes, canonical_ranges, graph_dims
from llamafleet.fit.estimate import GPU_RUNTIME_OVERHEAD
from llamafleet.fit.forward_graph import GraphDims
from llamafleet.fit.profile import ModelProfile


@dataclass(frozen=True)
class OffloadCurves:
    host: np.ndarray  # [n_layer + 2] (1 without devices): host bytes with g layers offloaded
    device: np.ndarray  # [n_layer + 2, devices]: each device's total bytes with g layers offloaded

    def most_layers(self, gpu_free: np.ndarray) -> np.ndarray:
        """Per row of ``gpu_free`` ([nodes, devices] free bytes), the largest g ≥ 1 whose memory fits
        every device, else 0. Not a monotone search: compute buffers can make a larger g need less.
        One device: the answer for a free size f is the largest g among the counts needing at most
        f, read off the counts sorted by need (sorted once per curve)."""
        if self.device.shape[1] == 1:
            needs, largest = self._by_need
            k = np.searchsorted(needs, gpu_free[:, 0], side="right")
            one: np.ndarray = np.where(k > 0, largest[np.maximum(k - 1, 0)], 0)
            return one
        fits = np.all(self.device[None, 1:, :] <= gpu_free[:, None, :], axis=2)  # [node, g - 1]
        top = len(self.device) - 1
        most: np.ndarray = np.where(np.any(fits, axis=1), top - np.argmax(fits[:, ::-1], axis=1), 0)
        return most

    @functools.cached_property
    def _by_need(self) -> tuple[np.ndarray, np.ndarray]:
        """One device: its needs for g = 1 … sorted, and the largest g among the k smallest."""
        need = self.device[1:, 0]
        order = np.argsort(need, kind="stable")
        return need[order], np.maximum.accumulate(order + 1)


@functools.lru_cache(maxsize=1024)
def _per_layer(profile: ModelProfile, params: ContextParams) -> tuple[np.ndarray, np.ndarray]:
    """Weights and KV bytes per layer (the output layer last, without KV)."""
    n = profile.n_layer
    weights = np.array([layer_weight_bytes(profile, il) for il in range(n + 1)], dtype=np.float64)
    kv = np.array([layer_kv_bytes(profile, params, il) for il in range(n)] + [0], dtype=np.float64)
    for array in (weights, kv):
        array.setflags(write=False)
    return weights, kv


@dataclass(frozen=True)
class _Split:
    """Where every layer goes for each g = 0 … n + 1 (only 0 without devices): the host keeps layers
    [0, start[g]) (n = the output layer), device d holds [first[g, d], stop[g, d]) (empty: equal) —
    llama.cpp's split points. Ranges, so sums over them are differences of prefix sums."""

    counts: np.ndarray  # [g]
    start: np.ndarray  # [g]
    first: np.ndarray  # [g, device]
    stop: np.ndarray  # [g, device]


@functools.lru_cache(maxsize=1024)
def _split(n: int, shares: tuple[float, ...]) -> _Split:
    layers = np.arange(n + 1)
    counts = np.arange(n + 2 if shares else 1)
    start = n + 1 - counts  # first offloaded layer for each g
    first = np.zeros((len(counts), len(shares)), dtype=np.int64)
    stop = np.zeros_like(first)
    if shares:
        points = np.cumsum(shares) / sum(shares)
        with np.errstate(divide="ignore", invalid="ignore"):
            position = (layers[None, :] - start[:, None]) / np.maximum(counts[:, None], 1)
        device_of = np.minimum(np.searchsorted(points, position, side="right"), len(shares) - 1)
        on_gpu = layers[None, :] >= start[:, None]
        for d in range(len(shares)):
            mine = on_gpu & (device_of == d)  # contiguous per row
            held = mine.any(1)
            first[:, d] = np.where(held, mine.argmax(1), 0)
            stop[:, d] = np.where(held, n + 1 - mine[:, ::-1].argmax(1), 0)
    for array in (counts, start, first, stop):
        array.setflags(write=False)
    return _Split(counts, start, first, stop)


def _prefix(values: np.ndarray) -> np.ndarray:
    """Prefix sums with a leading 0: the sum over layers [a, b) is p[b] - p[a]."""
    return np.concatenate(([0.0], np.cumsum(values)))


def _buffers(
    dims: GraphDims, params: ContextParams, first: np.ndarray, stop: np.ndarray, has_input: bool
) -> np.ndarray:
    """The compute buffer of a holder of layers [first, stop) (n = the output layer), per row; each
    distinct graph once. Ranges are made canonical first (``canonical_ranges``), which for blocks
    all alike leaves a handful of distinct ones."""
    n = dims.n_layer
    has_output = stop > n
    stop = np.where(stop > first, np.minimum(stop, n), 0)
    first, stop = canonical_ranges(dims, np.where(stop > 0, first, 0), stop)
    rows, inverse = np.unique(np.stack([first, stop, has_output], axis=1), axis=0, return_inverse=True)
    sizes = [canonical_range_bytes(dims, params, int(f), int(s), bool(o), has_input) for f, s, o in rows]
    return np.array(sizes, dtype=np.float64)[inverse.reshape(-1)]


@functools.lru_cache(maxsize=4096)
def _compute_by_count(
    dims: GraphDims, params: ContextParams, shares: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Compute buffers for every g: the host's [g] and each device's [g, device]. Shared by every
    model of one shape (weights do not enter the graph); each distinct graph is replayed once."""
    n = dims.n_layer
    split = _split(n, shares)
    host = _buffers(dims, params, np.zeros_like(split.start), split.start, has_input=True)
    device = np.zeros((len(split.counts), len(shares)))
    for d in range(len(shares)):
        device[:, d] = _buffers(dims, params, split.first[:, d], split.stop[:, d], has_input=False)
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
    split = _split(n, shares)
    held = _prefix(weights + kv)  # what a layer's holder keeps: its weights and its KV

    # host: input layer, CPU layers' weights (+ the repacked copy when mapped), KV, compute, output,
    # and the engine's prompt cache
    host = profile.input_weight_bytes + held[split.start]
    if use_mmap:
        host = host + _prefix(repacked)[split.start]
    host_compute, device_compute = _compute_by_count(graph_dims(profile), params, shares)
    host = host + host_compute + output_bytes(profile, params) + params.prompt_cache_bytes

    host.setflags(write=False)
    if not shares:
        return OffloadCurves(host, np.zeros((1, 0)))
    device = held[split.stop] - held[split.first] + device_compute
    if profile.tied_output:
        device = device + np.where(split.stop > n, profile.token_embd_bytes, 0)
    gpus = np.array([kind == "gpu" for kind in kinds])
    device = device + np.where((split.counts[:, None] > 0) & gpus[None, :], GPU_RUNTIME_OVERHEAD, 0)
    device.setflags(write=False)
    return OffloadCurves(host, device)

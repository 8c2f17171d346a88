"""The compute buffer: llama.cpp's worst-case graphs for a device's layers, allocated as ggml-alloc does.

llama.cpp reserves one compute buffer per device, sized by ggml-alloc for the prompt and
generation graphs (``forward_graph.reserve_batches``). ``compute_bytes`` rebuilds those graphs
(``forward_graph``) and replays the allocator on them (``galloc``), so the figure includes
ggml-alloc's fragmentation, which moves it by several MiB either way of any closed formula.

Cost: ggml-alloc's layout over identical blocks cycles, so a device's layers are replaced by a
few representative ones (``representative_layers``); tests/unit/llamafleet/test_fit_compute.py
checks that this gives the same bytes as every layer.
Results are cached by what the graph depends on, so many models of one shape cost one replay.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import numpy as np

from llamafleet.fit.components import ContextParams
from llamafleet.fit.forward_graph import DecoderGraph, GraphDims, GraphSpec, reserve_batches
from llamafleet.fit.galloc import CPU_ALIGNMENT, GraphAllocator, own_bytes
from llamafleet.fit.profile import ModelProfile


@functools.lru_cache(maxsize=4096)
def graph_dims(profile: ModelProfile) -> GraphDims:
    return GraphDims.of(profile)


@functools.lru_cache(maxsize=1024)
def cycle_length(swa_layers: tuple[bool, ...]) -> int:
    """Blocks after which ggml-alloc's layout over the model's layers repeats (see below)."""
    n = len(swa_layers)
    period = next((p for p in range(1, n) if swa_layers[p:] == swa_layers[: n - p]), max(n, 1))
    return math.lcm(2, period)


def representative_layers(dims: GraphDims, layers: list[int]) -> list[int]:
    """The layers whose graphs give the same buffer as all of ``layers`` (ascending, consecutive).

    ggml-alloc's layout over identical blocks settles into a cycle within a block or two: the
    residual stream alternates between two places, so the cycle is two blocks long, or the
    layer pattern's period if that is longer and even (Gemma 3: 6). Dropping whole cycles from
    the middle leaves the buffer unchanged; at least two cycles stay.
    """
    cycle = cycle_length(dims.swa_layers)
    kept = kept_count(len(layers), cycle)
    return layers if kept == len(layers) else layers[:cycle] + layers[len(layers) - kept + cycle :]


def kept_count(count: int, cycle: int) -> int:
    """How many of ``count`` consecutive layers ``representative_layers`` keeps: all up to three
    cycles, else the first cycle and the last ones, whole cycles dropped between (two or more stay)."""
    return int(kept_counts(np.asarray(count), cycle))


def kept_counts(counts: np.ndarray, cycle: int) -> np.ndarray:
    """``kept_count`` for an array of counts."""
    kept: np.ndarray = np.where(counts <= 3 * cycle, counts, counts - (counts - 2 * cycle) // cycle * cycle)
    return kept


@functools.lru_cache(maxsize=16384)
def _reserved_bytes(spec: GraphSpec, params: ContextParams) -> int:
    """The buffer for the prompt graph, or the generation graph if that needs more. Every tensor
    of these graphs is linear in the batch's tokens except the cache rotations (fixed), so the
    generation graph's own bytes are bounded from the prompt graph's, and it is only replayed
    when that bound exceeds the prompt's buffer (with one token per sequence, it never does).
    A device with no blocks and neither the input nor the output layer runs no graph."""
    if not spec.blocks and not spec.has_output and not spec.has_input:
        return 0
    prompt, generation = reserve_batches(params)
    graph = DecoderGraph(spec, params, prompt).build()
    size = GraphAllocator().run(graph)
    rotations = 2 * 4 * (spec.head_dim_k**2 + 64**2)  # at most: K and V rotations, full and sliding caches
    tensors = len(graph.nodes) + len(graph.leafs)
    per_token = own_bytes(graph) / max(1, prompt.tokens - prompt.n_seqs)  # streams may round tokens down
    bound = per_token * generation.tokens + rotations + CPU_ALIGNMENT * tensors
    if bound > size:
        size = max(size, GraphAllocator().run(DecoderGraph(spec, params, generation).build()))
    return size


@functools.lru_cache(maxsize=1024)
def is_uniform(dims: GraphDims) -> bool:
    """Every block has the same graph (then only how many a device runs matters, not which)."""
    return all(len(set(values)) <= 1 for values in (dims.n_head, dims.n_head_kv, dims.n_ff, dims.swa_layers))


def range_compute_bytes(
    dims: GraphDims, params: ContextParams, first: int, stop: int, has_output: bool, has_input: bool
) -> int:
    """The compute buffer of a device running blocks [first, stop) (+ the output / input layer)."""
    first, stop = canonical_range(dims, first, stop)
    return canonical_range_bytes(dims, params, first, stop, has_output, has_input)


def canonical_range(dims: GraphDims, first: int, stop: int) -> tuple[int, int]:
    """A range with the same compute buffer as blocks [first, stop): when every block has the same
    graph only how many a device runs matters (and whether the model's last is among them), and
    beyond two cycles only the count modulo the cycle (as ``representative_layers`` keeps)."""
    firsts, stops = canonical_ranges(dims, np.asarray(first), np.asarray(stop))
    return int(firsts), int(stops)


def canonical_ranges(dims: GraphDims, first: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``canonical_range`` for arrays of ranges."""
    if not is_uniform(dims):
        return first, stop
    n = dims.n_layer
    count = kept_counts(stop - first, cycle_length(dims.swa_layers))
    return np.where(stop == n, n - count, 0), np.where(stop == n, n, count)


@functools.lru_cache(maxsize=65536)
def canonical_range_bytes(
    dims: GraphDims, params: ContextParams, first: int, stop: int, has_output: bool, has_input: bool
) -> int:
    """``range_compute_bytes`` for a range already canonical (``canonical_range(s)``)."""
    layers = representative_layers(dims, list(range(first, stop)))
    return _reserved_bytes(GraphSpec.of(dims, params, layers, has_output, has_input), params)


def compute_bytes(
    profile: ModelProfile,
    params: ContextParams,
    layers: Iterable[int],
    has_output: bool,
    has_input: bool = True,
    every_layer: bool = False,
) -> int:
    """The compute buffer of a device that runs ``layers`` (consecutive block indices; n_layer, the
    output layer, counts as ``has_output``), holding the input layer (the host) when ``has_input``.
    ``every_layer`` builds every block's graph instead of representative ones (for tests)."""
    indices = list(layers)
    blocks = sorted(il for il in indices if il < profile.n_layer)
    has_output = has_output or profile.n_layer in indices
    dims = graph_dims(profile)
    if not every_layer:
        first, stop = (blocks[0], blocks[-1] + 1) if blocks else (0, 0)
        return range_compute_bytes(dims, params, first, stop, has_output, has_input)
    return _reserved_bytes(GraphSpec.of(dims, params, blocks, has_output, has_input), params)

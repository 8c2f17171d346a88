"""The layer-split seam: when no single node fits and the model allows it, plan a split over nodes.

The head node runs the engine (input and output layers, the compute graph, the output buffer);
workers host contiguous ranges of repeating layers through llama.cpp's RPC backend. Workers take
the first ranges and the head the last one, next to the output layer: llama.cpp gives layers to
its devices in device order, and the head's CPU must come last to keep the output
(nodeagent/rpc/ggml.py: ``layout``). Layer ranges are in proportion to each node's room (free
memory, less what the head holds whatever its range); the plan is returned only when every part
fits.
The reconciler executes it (controlplane/reconciler.py): RPC workers on the worker nodes, then
the head engine pointed at them once every worker is ready (docs/SPLIT.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from llamafleet.fit.components import ContextParams, kv_cache_bytes, layer_weight_bytes, output_bytes
from llamafleet.fit.compute import compute_bytes
from llamafleet.fit.estimate import GPU_RUNTIME_OVERHEAD
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import Gpu, NodeResources, gib


@dataclass(frozen=True)
class SplitPart:
    node_id: str
    first_layer: int  # inclusive
    last_layer: int  # inclusive; the output layer is always the head's, besides its range
    bytes: int  # weights + KV + compute this node needs for its part
    free_bytes: int


@dataclass(frozen=True)
class SplitPlan:
    head: str
    parts: tuple[SplitPart, ...]  # in layer order: the workers', then the head's

    def describe(self) -> str:
        ranges = ", ".join(
            f"{p.node_id} layers {p.first_layer}-{p.last_layer} ({gib(p.bytes)} of {gib(p.free_bytes)} free)"
            for p in self.parts
        )
        return f"head {self.head}; {ranges}"


def _part_bytes(profile: ModelProfile, params: ContextParams, layers: range, head: bool) -> int:
    """Weights, KV and compute of ``layers``; the head adds the input and output layers, the output
    buffer and its engine's prompt cache (saved states hold every layer's cells, the workers' too)."""
    need = sum(layer_weight_bytes(profile, il) for il in layers) + kv_cache_bytes(profile, params, layers)
    need += compute_bytes(profile, params, layers, has_output=head, has_input=head)
    if head:
        need += profile.input_weight_bytes + layer_weight_bytes(profile, profile.n_layer)
        need += output_bytes(profile, params) + params.prompt_cache_bytes
    return need


def plan_split(profile: ModelProfile, params: ContextParams, offers: list[NodeResources]) -> SplitPlan | None:
    """Repeating layers in proportion to each node's room: its free host memory, less (on the head)
    what the head holds whatever its range — the input and output layers, the output buffer and the
    prompt cache. The
    head is the node with most free memory and takes the last range. None when fewer than two nodes
    are usable or a part would not fit.
    """
    usable = sorted((o for o in offers if o.ram_free_bytes > 0), key=lambda o: (-o.ram_free_bytes, o.node))
    if len(usable) < 2:
        return None
    ordered = [*usable[1:], usable[0]]  # workers in layer order, then the head
    n_layer = profile.n_layer
    fixed = _part_bytes(profile, params, range(0), head=True)
    room = [max(0, o.ram_free_bytes - (fixed if o is usable[0] else 0)) for o in ordered]
    per_layer = [_part_bytes(profile, params, range(il, il + 1), head=False) for il in range(n_layer)]
    if not sum(room):
        return None
    # Cut points where the running cost of layers reaches each node's running share of the room.
    total_cost, total_room = sum(per_layer), sum(room)
    cuts, cost, share, il = [], 0, 0, 0
    for node_room in room[:-1]:
        share += node_room
        while il < n_layer and (cost + per_layer[il] / 2) * total_room <= share * total_cost:
            cost += per_layer[il]
            il += 1
        cuts.append(il)
    cuts = [min(cut, n_layer - 1) for cut in cuts]  # the head keeps at least one repeating layer
    cuts.append(n_layer)
    parts: list[SplitPart] = []
    start = 0
    for index, (offer, end) in enumerate(zip(ordered, cuts, strict=True)):
        head = index == len(ordered) - 1
        if end <= start and not head:
            continue
        need = _part_bytes(profile, params, range(start, end), head=head)
        parts.append(SplitPart(offer.node, start, end - 1, need, offer.ram_free_bytes))
        start = end
    if len(parts) < 2 or parts[-1].first_layer > parts[-1].last_layer:
        return None
    if any(p.bytes > p.free_bytes for p in parts):
        return None
    return SplitPlan(usable[0].node, tuple(parts))


def on_gpu(part: SplitPart, gpus: tuple[Gpu, ...]) -> bool:
    """Whether a part's range goes on its node's first GPU: only when all of it fits there (with the
    CUDA runtime's reserve); otherwise it stays in host memory, where the plan measured its room."""
    real = [g for g in gpus if g.kind == "gpu"]
    return bool(real) and part.bytes + GPU_RUNTIME_OVERHEAD <= real[0].free_bytes

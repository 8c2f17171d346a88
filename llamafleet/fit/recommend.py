"""Model compatibility: does a model fit a node, in which mode, with how many GPU layers and how much context.

The answer has the shape of Cortex's model compatibility API, per model and node::

    {"cpu_mode": {"ram": MiB, "fits": true, "max_context_length": N},
     "gpu_mode": [{"devices": [...], "ram": MiB, "vram": MiB, "ngl": n_layer + 1,
                   "context_length": N, "recommend_ngl": G, "max_context_length": N, "fits": true}]}

``ram`` is host memory including the memory-mapped weights (they must stay resident to run at
speed); ``vram`` is the GPUs' total at full offload, runtime reserve included; ``recommend_ngl``
is the most layers that fit the GPUs' free memory at the asked context (0: none);
``max_context_length`` the largest context per sequence (a multiple of 256, at most the
trained one) that fits at all in that mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llamafleet.fit.components import ContextParams, repack_types
from llamafleet.fit.estimate import Estimate, Offload, Target, estimate
from llamafleet.fit.profile import ModelProfile

MIB = 1024 * 1024
CONTEXT_STEP = 256
UNKNOWN_TRAINED_CONTEXT = 131072


@dataclass(frozen=True)
class Gpu:
    name: str
    free_bytes: int
    total_bytes: int = 0
    kind: str = "gpu"  # "gpu" | "rpc"


@dataclass(frozen=True)
class NodeResources:
    """What a node offers a new replica: free RAM, GPUs with free memory, CPU features."""

    node: str
    ram_free_bytes: int
    gpus: tuple[Gpu, ...] = ()
    cpu_flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mode:
    name: str  # "cpu" or the GPUs' names joined with "+"
    devices: tuple[str, ...]
    ram_bytes: int
    vram_bytes: int
    ngl: int
    context_length: int
    recommend_ngl: int
    max_context_length: int
    fits: bool
    short: str = ""  # why it does not fit, for people

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ram": _mib(self.ram_bytes),
            "fits": self.fits,
            "max_context_length": self.max_context_length,
        }
        if self.devices:
            out = {
                "devices": list(self.devices),
                "ram": _mib(self.ram_bytes),
                "vram": _mib(self.vram_bytes),
                "ngl": self.ngl,
                "context_length": self.context_length,
                "recommend_ngl": self.recommend_ngl,
                "max_context_length": self.max_context_length,
                "fits": self.fits,
            }
        if self.short:
            out["short"] = self.short
        return out


@dataclass(frozen=True)
class Recommendation:
    node: str
    cpu_mode: Mode
    gpu_mode: tuple[Mode, ...] = ()
    best: Mode | None = None  # the mode to run in: the GPUs with most layers, else the CPU; None: no fit
    estimate: Estimate | None = field(default=None, compare=False)  # of the best mode

    @property
    def fits(self) -> bool:
        return self.best is not None

    def reason(self) -> str:
        modes = [self.cpu_mode, *self.gpu_mode]
        return f"{self.node}: " + "; ".join(f"{m.name} mode {m.short}" for m in modes if m.short)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.node,
            "cpu_mode": self.cpu_mode.to_dict(),
            "gpu_mode": [m.to_dict() for m in self.gpu_mode],
            "fits": self.fits,
        }
        if self.best is not None:
            out["run_as"] = {"mode": self.best.name, "n_gpu_layers": self.best.recommend_ngl}
        else:
            out["reason"] = self.reason()
        return out


def _mib(n: int) -> int:
    return -(-n // MIB)  # round up: a plan should never look smaller than it is


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def ram_short(need: int, free: int, prompt_cache_bytes: int) -> str:
    """How far ``need`` bytes of RAM are from ``free``, naming the engine's prompt cache when it counts."""
    cache = f", {gib(prompt_cache_bytes)} of it the prompt cache (cacheRam)" if prompt_cache_bytes else ""
    return f"needs {gib(need)} RAM, {gib(max(free, 0))} free (short {gib(need - free)}){cache}"


def shortfall(est: Estimate, node: NodeResources, gpus: tuple[Gpu, ...]) -> str:
    """Why ``est`` does not fit ``node`` with these GPUs, with how much is missing; "" when it fits."""
    problems = []
    if est.host_bytes > node.ram_free_bytes:
        problems.append(ram_short(est.host_bytes, node.ram_free_bytes, est.params.prompt_cache_bytes))
    for gpu in gpus:
        need = est.device(gpu.name).total_bytes
        if need > gpu.free_bytes:
            short = gib(need - gpu.free_bytes)
            problems.append(f"{gpu.name} needs {gib(need)}, {gib(gpu.free_bytes)} free (short {short})")
    return "; ".join(problems)


def offload_for(node: NodeResources, gpus: tuple[Gpu, ...], ngl: int, use_mmap: bool = True) -> Offload:
    """ngl layers on these GPUs, split as llama.cpp does by default (by free memory)."""
    shares = [float(max(g.free_bytes, 1)) if len(gpus) > 1 else 1.0 for g in gpus]  # one device: all of it
    return Offload(
        n_gpu_layers=ngl,
        targets=tuple(Target(g.name, g.kind, share) for g, share in zip(gpus, shares, strict=True)),
        use_mmap=use_mmap,
        cpu_repack_types=repack_types(node.cpu_flags),
    )


def _largest_context(
    profile: ModelProfile, params: ContextParams, fits: Callable[[ContextParams], bool]
) -> int:
    """Binary search over contexts per sequence in steps of 256, up to the trained context."""
    top = (profile.context_length or UNKNOWN_TRAINED_CONTEXT) // CONTEXT_STEP
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(replace(params, n_ctx_per_seq=mid * CONTEXT_STEP)):
            lo = mid
        else:
            hi = mid - 1
    return lo * CONTEXT_STEP


def _cpu_mode(profile: ModelProfile, params: ContextParams, node: NodeResources) -> tuple[Mode, Estimate]:
    offload = offload_for(node, (), 0)
    est = estimate(profile, params, offload)

    def fits(p: ContextParams) -> bool:
        return estimate(profile, p, offload).host_bytes <= node.ram_free_bytes

    short = shortfall(est, node, ())
    mode = Mode(
        "cpu",
        (),
        est.host_bytes,
        0,
        0,
        params.n_ctx_per_seq,
        0,
        _largest_context(profile, params, fits),
        not short,
        short,
    )
    return mode, est


def _gpu_mode(
    profile: ModelProfile, params: ContextParams, node: NodeResources, gpus: tuple[Gpu, ...]
) -> tuple[Mode, Estimate]:
    all_layers = profile.n_layer + 1

    def fits_with(p: ContextParams, ngl: int) -> Estimate | None:
        est = estimate(profile, p, offload_for(node, gpus, ngl))
        return None if shortfall(est, node, gpus) else est

    full = estimate(profile, params, offload_for(node, gpus, all_layers))
    recommend_ngl, chosen = 0, None
    for ngl in range(all_layers, 0, -1):  # most layers first; VRAM falls as layers move back
        chosen = fits_with(params, ngl)
        if chosen is not None:
            recommend_ngl = ngl
            break
    short = (
        "" if recommend_ngl else shortfall(estimate(profile, params, offload_for(node, gpus, 1)), node, gpus)
    )
    mode = Mode(
        name="+".join(g.name for g in gpus),
        devices=tuple(g.name for g in gpus),
        ram_bytes=full.host_bytes,
        vram_bytes=full.vram_bytes + full.rpc_bytes,
        ngl=all_layers,
        context_length=params.n_ctx_per_seq,
        recommend_ngl=recommend_ngl,
        max_context_length=_largest_context(profile, params, lambda p: fits_with(p, all_layers) is not None),
        fits=bool(recommend_ngl),
        short=short,
    )
    return mode, chosen or full


def _gpu_sets(gpus: tuple[Gpu, ...]) -> list[tuple[Gpu, ...]]:
    """Each GPU alone, then all of them together (llama.cpp's layer split) when there are several."""
    sets: list[tuple[Gpu, ...]] = [(g,) for g in gpus]
    if len(gpus) > 1:
        sets.append(gpus)
    return sets


def recommend(profile: ModelProfile, params: ContextParams, node: NodeResources) -> Recommendation:
    cpu, cpu_est = _cpu_mode(profile, params, node)
    gpu_modes = [_gpu_mode(profile, params, node, gpus) for gpus in _gpu_sets(node.gpus)]
    fitting = [(m, e) for m, e in gpu_modes if m.fits]
    # Prefer most layers on GPUs, then the fewest devices (one GPU beats a split).
    fitting.sort(key=lambda me: (-me[0].recommend_ngl, len(me[0].devices)))
    best, best_est = fitting[0] if fitting else ((cpu, cpu_est) if cpu.fits else (None, None))
    return Recommendation(node.node, cpu, tuple(m for m, _ in gpu_modes), best, best_est)


def best_node(
    profile: ModelProfile, params: ContextParams, nodes: Sequence[NodeResources]
) -> tuple[Recommendation | None, list[Recommendation]]:
    """The node where the model runs with most GPU layers (then most RAM left); and every node's answer."""
    answers = [recommend(profile, params, node) for node in nodes]
    ram_free = {n.node: n.ram_free_bytes for n in nodes}
    ranked = sorted(
        (
            (r.best.recommend_ngl, ram_free[r.node] - r.best.ram_bytes, r)
            for r in answers
            if r.best is not None
        ),
        key=lambda item: (-item[0], -item[1]),
    )
    return (ranked[0][2] if ranked else None), answers

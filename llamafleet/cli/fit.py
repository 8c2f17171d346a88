"""`llamafleet fit PATH`: how much RAM and VRAM llama.cpp will take for a model, with no cluster.

Reads the GGUF header (nothing else), estimates every buffer per device, and says whether and
how the model fits this machine, or the GPUs and RAM given with --vram/--ram.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from llamafleet.cli.download import local_file, source_argument
from llamafleet.core.errors import InvalidRequest
from llamafleet.fit.components import KV_TYPES, ContextParams
from llamafleet.fit.estimate import Estimate, estimate
from llamafleet.fit.recommend import Gpu, NodeResources, Recommendation, offload_for, recommend
from llamafleet.units import sizes
from nodeagent.gguf.model_facts import read_model_facts
from nodeagent.hardware.inventory import collect

DESCRIPTION = """\
Estimate the memory llama.cpp allocates for a GGUF model, per device and per component
(weights, KV cache, compute buffer, output buffer, runtime reserve), from its header alone,
and say whether it fits: in CPU mode, and on each GPU with the most layers that fit.

  llamafleet fit model.gguf                       # this machine's RAM and GPUs
  llamafleet fit model.gguf --ctx 32768 --parallel 4 --kv-type q8_0
  llamafleet fit model.gguf --vram 24GiB --vram 24GiB --ram 64GiB --ngl auto
  llamafleet fit model.gguf --vram 8GiB --rpc 10.0.0.7:50052=16GiB --ngl -1 --tensor-split 1,2
  llamafleet fit model.gguf --json                # one JSON object for other tools

Sizes take B, KiB, MiB, GiB, TiB (or K, M, G, T, also powers of 1024). On CPU the total matches
llama.cpp's own buffers within 3% (docs/BENCHMARKS.md); GPU figures follow llama.cpp's rules but
are not measured, and add a 256 MiB runtime reserve per GPU. --cache-ram adds what llamafleet's
engine keeps beside llama.cpp: prompt states saved to host memory (a Model's cacheRam, 1 GiB by
default), as placement counts them.
"""


def parse_size(text: str) -> int:
    try:
        return sizes.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_ngl(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--ngl takes a number of layers, -1 (all) or auto, not {text!r}"
        ) from None
    return value


def parse_rpc(text: str) -> Gpu:
    name, sep, size = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(
            f"--rpc takes HOST:PORT=SIZE, e.g. 10.0.0.7:50052=16GiB, not {text!r}"
        )
    free = parse_size(size)
    return Gpu(name, free, free, kind="rpc")


def parse_split(text: str) -> tuple[float, ...]:
    try:
        shares = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--tensor-split takes numbers separated by commas, not {text!r}"
        ) from None
    if any(s < 0 for s in shares) or not any(shares):
        raise argparse.ArgumentTypeError("--tensor-split needs non-negative shares, at least one positive")
    return shares


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        type=source_argument,
        help="the GGUF model file, or a source: an http(s) URL or hf://ORG/REPO[:QUANT] "
        "(downloaded into this machine's model cache, with a progress bar)",
    )
    parser.add_argument(
        "--ctx", type=int, default=4096, help="context per sequence, in tokens (default: 4096)"
    )
    parser.add_argument(
        "--parallel", type=int, default=1, help="sequences served at once, i.e. slots (default: 1)"
    )
    parser.add_argument(
        "--kv-type",
        choices=sorted(KV_TYPES),
        default="f16",
        help="KV cache type for K and V (default: f16; quantized V needs flash attention)",
    )
    parser.add_argument(
        "--flash-attn",
        choices=("on", "off"),
        default="on",
        help="flash attention (default: on, as llama.cpp's auto on CPUs and recent GPUs)",
    )
    parser.add_argument("--batch", type=int, default=512, help="logical batch size n_batch (default: 512)")
    parser.add_argument("--ubatch", type=int, default=512, help="micro-batch size n_ubatch (default: 512)")
    parser.add_argument("--unified", action="store_true", help="one KV cache shared by all sequences")
    parser.add_argument(
        "--swa-full", action="store_true", help="full-size KV cache for sliding-window layers"
    )
    parser.add_argument(
        "--cache-ram",
        type=int,
        default=0,
        metavar="MiB",
        help="MiB of host memory for prompt states saved from slots, counted in the CPU's RESERVE, as the "
        "engine's --cache-ram (default: 0, llama.cpp alone; llamafleet's engine keeps up to 1024, a Model's "
        "cacheRam, and placement counts it)",
    )
    parser.add_argument(
        "--ngl",
        type=parse_ngl,
        default=None,
        metavar="N|auto",
        help="layers on the GPUs: a number, -1 for all, or auto (default: auto, the most that fit)",
    )
    parser.add_argument(
        "--vram",
        type=parse_size,
        action="append",
        metavar="SIZE",
        help="free memory of a GPU; repeat per GPU (default: this machine's GPUs)",
    )
    parser.add_argument(
        "--rpc",
        type=parse_rpc,
        action="append",
        metavar="HOST:PORT=SIZE",
        help="an llama.cpp RPC worker and its free memory; repeat per worker (layers split after the GPUs)",
    )
    parser.add_argument(
        "--tensor-split",
        type=parse_split,
        metavar="A,B,…",
        help="shares of the offloaded layers per GPU then RPC worker, as llama.cpp's --tensor-split "
        "(default: by free memory)",
    )
    parser.add_argument(
        "--ram", type=parse_size, metavar="SIZE", help="free RAM (default: this machine's available RAM)"
    )
    parser.add_argument(
        "--no-mmap", action="store_true", help="read weights into RAM instead of mapping the file"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


async def _local_resources(args: argparse.Namespace) -> NodeResources:
    inventory = await collect()  # llama.cpp's devices and CPU features, from a child process
    if args.vram is not None:
        gpus = tuple(Gpu(f"GPU{i}", size, size) for i, size in enumerate(args.vram))
    else:
        gpus = tuple(
            Gpu(d.name, d.memory_free_bytes, d.memory_total_bytes)
            for d in inventory.devices
            if d.kind == "gpu"
        )
    ram = args.ram if args.ram is not None else inventory.ram_free_bytes
    return NodeResources("this machine", ram, gpus + tuple(args.rpc or ()), inventory.cpu_flags)


def device_table(est: Estimate) -> str:
    rows = [["DEVICE", "KIND", "LAYERS", "WEIGHTS", "KV", "COMPUTE", "OUTPUT", "RESERVE", "TOTAL (MiB)"]]
    for d in est.devices:
        rows.append(
            [
                d.name,
                d.kind,
                d.to_dict()["layers"] or "-",
                _mib(d.weights_bytes),
                _mib(d.kv_bytes),
                _mib(d.compute_bytes),
                _mib(d.output_bytes),
                _mib(d.overhead_bytes),
                _mib(d.total_bytes),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.rjust(w) if i > 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    )


def render(profile_line: str, est: Estimate, rec: Recommendation) -> str:
    lines = [profile_line, "", device_table(est), ""]
    lines.append(
        f"RAM {_mib(est.ram_bytes)} MiB allocated"
        f" + {_mib(est.page_cache_bytes)} MiB mapped weights (page cache)   VRAM {_mib(est.vram_bytes)} MiB"
        + (f"   RPC {_mib(est.rpc_bytes)} MiB" if est.rpc_bytes else "")
    )
    cpu = rec.cpu_mode
    lines.append("")
    fits = "fits" if cpu.fits else f"does not fit: {cpu.short}"
    largest = cpu.max_context_length or "none"
    lines.append(
        f"cpu mode: needs {_mib(cpu.ram_bytes)} MiB RAM: {fits}; largest context that fits: {largest}"
    )
    for m in rec.gpu_mode:
        verdict = (
            f"fits with {m.recommend_ngl}/{m.ngl} layers on the GPU" if m.fits else f"does not fit: {m.short}"
        )
        need = f"{_mib(m.vram_bytes)} MiB VRAM + {_mib(m.ram_bytes)} MiB RAM"
        largest = m.max_context_length or "none"
        lines.append(
            f"gpu mode ({m.name}): full offload needs {need}; {verdict}; max full-offload context {largest}"
        )
    if rec.best is None:
        lines.append(f"\nverdict: does not fit ({rec.reason()})")
    else:
        lines.append(f"\nverdict: run in {rec.best.name} mode with --ngl {rec.best.recommend_ngl}")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    args.path = await local_file(args.path)
    profile = read_model_facts(args.path).profile()
    try:
        params = ContextParams(
            n_ctx_per_seq=args.ctx,
            n_seq=args.parallel,
            n_batch=args.batch,
            n_ubatch=args.ubatch,
            type_k=args.kv_type,
            type_v=args.kv_type,
            flash_attn=args.flash_attn == "on",
            unified=args.unified,
            swa_full=args.swa_full,
            prompt_cache_bytes=args.cache_ram << 20,
        ).check()
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    node = await _local_resources(args)
    rec = recommend(profile, params, node)
    if args.ngl is None:  # auto: the recommended mode
        best = rec.best
        ngl = best.recommend_ngl if best is not None else 0
        gpus = tuple(g for g in node.gpus if best is not None and g.name in best.devices)
    else:
        ngl, gpus = args.ngl, node.gpus
    offload = offload_for(node, gpus if ngl else (), ngl, use_mmap=not args.no_mmap)
    if args.tensor_split and offload.targets:
        if len(args.tensor_split) != len(offload.targets):
            names = ", ".join(t.name for t in offload.targets)
            shares = len(args.tensor_split)
            raise InvalidRequest(
                f"--tensor-split has {shares} shares for {len(offload.targets)} devices ({names})"
            )
        targets = tuple(replace(t, split=s) for t, s in zip(offload.targets, args.tensor_split, strict=True))
        offload = replace(offload, targets=targets)
    est = estimate(profile, params, offload)
    if args.json:
        out: dict[str, Any] = {
            "model": {
                "path": str(args.path),
                "name": profile.name,
                "architecture": profile.architecture,
                "layers": profile.n_layer,
                "trained_context_length": profile.context_length,
                "file_bytes": profile.file_size,
            },
            **est.to_dict(),
            "recommendation": rec.to_dict(),
        }
        print(json.dumps(out, indent=2))
    else:
        p = profile
        model = f"{p.name} ({p.architecture}, {p.n_layer} layers, {_mib(p.file_size)} MiB file"
        asked = f"context {params.n_ctx_per_seq} x {params.n_seq}, KV {params.type_k}"
        summary = (
            f"{model}, trained context {p.context_length}) at {asked}, flash attention {args.flash_attn},"
            f" {est.n_gpu_layers} layers offloaded"
        )
        print(render(summary, est, rec))
    return 0

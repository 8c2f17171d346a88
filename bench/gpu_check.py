"""The prepared GPU check: what llamafleet does on a real GPU, measured in one run of at most 8 minutes.

On a lent GPU machine (the device tool; nothing there reaches a network), after `make gpu-bundle` here:
    bash bench/gpu_check.sh                       # the device's command, with carry [".gpu"]
On this CPU machine, the same steps small (tests/integration/test_gpu_check.py runs it):
    .venv/bin/python bench/gpu_check.py --dry-run

The models are SmolLM2-135M and gemma3-270m rebuilt from their headers (tests/support/skeleton_gguf.py:
the real tensor types, shapes and metadata, seeded weights), so every buffer, kernel and estimate is
theirs. Steps, each a section of the JSON written to --out (after every step, so a cut-off run keeps
what it measured) and printed as the last line:

  inventory  the agent's own inventory: llama.cpp's devices, and NVML's names, memory, driver and CUDA
  fit        both models × 2 contexts × gpuLayers 0, half and all: llamafleet.fit's prediction per device
             and component against llama.cpp's buffers (its log lines), and NVML's used memory around
             the load, whose excess over llama.cpp's GPU buffers is the CUDA runtime's own (what
             GPU_RUNTIME_OVERHEAD, 256 MiB, guesses)
  auto       gpuLayers auto on a GPU capped smaller than the model needs: the layers recommend() picks,
             and the engine loading them (no out-of-memory), with NVML's used memory against the cap
  speed      the engine against llama-server built from the same sources (tools/llama_cpp_cuda.py),
             all layers on the GPU, 1, 8 and 32 streams of fixed length
  split      the model split between a head and an RPC worker on this machine, each on the GPU: greedy
             tokens equal to the whole model's, and decode speed against it
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine import aggregate, running_llama_server, single_stream
from llamafleet.fit.estimate import CPU, GPU_RUNTIME_OVERHEAD, estimate
from llamafleet.fit.recommend import Gpu, NodeResources, offload_for, recommend
from nodeagent.fitprobe.compare import COMPONENTS, MIB, Cell, observed_components, within_bound
from nodeagent.gguf.model_facts import read_model_facts
from nodeagent.hardware.inventory import collect
from nodeagent.rpc.ggml import lib_dir
from tests.support import skeleton_gguf
from tests.support.engine import running_engine
from tests.support.rpc import greedy, rpc_worker

MODELS = {"smollm2": "smollm2.skel.gz", "gemma3": "gemma3.skel.gz"}


def real_models() -> dict[str, Path]:
    """This machine's real GGUFs of the two models (to make skeletons from here)."""
    from bench.engine import gemma3_path
    from nodeagent.cache.resolver import builtin_path

    found = {"smollm2": builtin_path("smollm2-135m")}
    gemma = gemma3_path()
    if gemma is not None:
        found["gemma3"] = gemma
    return found


def make_skeletons(folder: Path, models: dict[str, Path]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in models.items():
        skeleton_gguf.strip(path, folder / MODELS[name])


def rebuild(skeletons: Path, work: Path, names: list[str]) -> dict[str, Path]:
    out = {}
    for name in names:
        started = time.monotonic()
        out[name] = skeleton_gguf.fill(skeletons / MODELS[name], work / f"{name}.gguf")
        print(f"gpu_check: {name} rebuilt from its header in {time.monotonic() - started:.1f}s", flush=True)
    return out


# --- steps -----------------------------------------------------------------------------------------


def inventory() -> dict[str, Any]:
    host = asyncio.run(collect(sys.executable))
    return {
        "devices": [
            {
                "name": d.name,
                "kind": d.kind,
                "description": d.description,
                "memory_total": d.memory_total_bytes,
                "memory_free": d.memory_free_bytes,
            }
            for d in host.devices
        ],
        "nvml": None
        if host.nvml is None
        else {
            "driver": host.nvml.driver_version,
            "cuda": host.nvml.cuda_driver_version,
            "gpus": [{"name": g.name, "memory_total": g.memory_total_bytes} for g in host.nvml.gpus],
        },
        "llama_cpp_lib": lib_dir(),
    }


def probe(model: Path, cell: Cell, ngl: int) -> dict[str, Any]:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "nodeagent.fitprobe", str(model), *cell.flags(), "--ngl", str(ngl), "--nvml"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"fitprobe exit {done.returncode}: {done.stderr.strip()[-400:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def fit(models: dict[str, Path], contexts: list[int], gpus: list[Gpu]) -> list[dict[str, Any]]:
    rows = []
    for name, path in models.items():
        profile = read_model_facts(path).profile()
        for ctx in contexts:
            cell = Cell(ctx=ctx, flash_attn=bool(gpus))
            layer_counts = [0, profile.n_layer // 2, -1] if gpus else [0]
            for ngl in layer_counts:
                observed = probe(path, cell, ngl)
                node = NodeResources("here", 1 << 40, tuple(gpus))
                est = estimate(profile, cell.params(), offload_for(node, tuple(gpus[:1]), ngl))
                row: dict[str, Any] = {"model": name, "ctx": ctx, "ngl": ngl, "devices": {}}
                for device in est.devices:
                    predicted = {
                        "weights": device.weights_bytes,
                        "kv": device.kv_bytes,
                        "compute": device.compute_bytes,
                        "output": device.output_bytes,
                        "total": device.buffers_bytes,
                    }
                    got = observed_components(device_totals(observed["buffers"], device.name))
                    row["devices"][device.name] = {c: side_by_side(predicted[c], got[c]) for c in COMPONENTS}
                used = observed.get("nvml_used") or {}
                if used.get("before") and used.get("after"):
                    gpu_buffers = (
                        sum(device_totals(observed["buffers"], gpus[0].name).values()) if gpus else 0
                    )
                    runtime = used["after"][0] - used["before"][0] - gpu_buffers
                    row["cuda_runtime_mib"] = round(runtime / MIB, 1)
                    row["runtime_vs_guess"] = round(runtime / GPU_RUNTIME_OVERHEAD, 3)
                rows.append(row)
                held = all(v["within"] for d in row["devices"].values() for v in d.values())
                print(f"gpu_check: fit {name} ctx {ctx} ngl {ngl}: within the bound: {held}", flush=True)
    return rows


def side_by_side(predicted: int, observed: int) -> dict[str, Any]:
    return {
        "predicted_mib": round(predicted / MIB, 2),
        "observed_mib": round(observed / MIB, 2),
        "within": within_bound(predicted, observed),
    }


def device_totals(buffers: dict[str, dict[str, int]], device: str) -> dict[str, int]:
    """One device's buffers by kind; llama.cpp names host buffers CPU, CPU_Mapped, CUDA_Host, …"""

    def mine(name: str) -> bool:
        if device == CPU:
            return name.startswith("CPU") or name.endswith("_Host")
        return name == device

    return {kind: sum(v for k, v in by_device.items() if mine(k)) for kind, by_device in buffers.items()}


def auto_offload(model: Path, gpus: list[Gpu], logs: Path) -> dict[str, Any]:
    """A GPU capped below what the whole model needs: recommend() picks layers; the engine loads them."""
    profile = read_model_facts(model).profile()
    cell = Cell(ctx=8192, flash_attn=True)
    whole = estimate(profile, cell.params(), offload_for(NodeResources("here", 1 << 40), tuple(gpus[:1]), -1))
    need = whole.device(gpus[0].name).total_bytes
    cap = int(need * 0.6)
    node = NodeResources("here", 1 << 40, (Gpu(gpus[0].name, cap, cap),))
    chosen = recommend(profile, cell.params(), node)
    ngl = chosen.best.recommend_ngl if chosen.best is not None else 0
    used = probe(model, cell, ngl)
    nvml = used.get("nvml_used") or {}
    taken = nvml["after"][0] - nvml["before"][0] if nvml.get("after") and nvml.get("before") else None
    flags = ("--n-gpu-layers", str(ngl), "--context-length", "8192", "--parallel-slots", "1")
    with running_engine(model, logs, *flags, name="m") as engine:
        answer = greedy(engine.url, "Once upon a time", "m")
    return {
        "cap_mib": round(cap / MIB),
        "whole_model_mib": round(need / MIB),
        "n_layer": profile.n_layer,
        "ngl": ngl,
        "loaded": bool(used["ok"]) and bool(answer),
        "nvml_taken_mib": None if taken is None else round(taken / MIB),
        "within_cap": None if taken is None else taken <= cap,
    }


def speed(model: Path, ngl: int, streams: list[int], tokens: int, logs: Path) -> dict[str, Any]:
    server = Path(os.environ.get("LLAMA_SERVER", "")) if os.environ.get("LLAMA_SERVER") else None
    threads = os.cpu_count() or 1
    slots = max(streams)
    out: dict[str, Any] = {"ngl": ngl, "tokens": tokens}

    def measure(url: str) -> dict[str, float]:
        figures = {"1": round(asyncio.run(single_stream(url, "m", tokens)), 1)}
        for n in streams[1:]:
            figures[str(n)] = round(asyncio.run(aggregate(url, n, "m")), 1)
        return figures

    flags = (
        "--n-gpu-layers",
        str(ngl),
        "--parallel-slots",
        str(slots),
        "--context-length",
        "1024",
        "--n-threads",
        str(threads),
    )
    with running_engine(model, logs, *flags, name="m") as engine:
        out["engine_tps"] = measure(engine.url)
    if server is not None and server.is_file():
        with running_llama_server(server, model, threads, slots, 1024, logs, ngl) as url:
            out["llama_server_tps"] = measure(url)
        out["ratio"] = {
            k: round(out["engine_tps"][k] / v, 3) for k, v in out["llama_server_tps"].items() if v
        }
    else:
        out["llama_server_tps"] = None  # no llama-server here (bench/build_llama_server.sh builds one)
    return out


def split(model: Path, ngl: int, tokens: int, logs: Path) -> dict[str, Any]:
    """Greedy tokens of the split against the whole model's (24, after the same prompt), then the
    decode rate of a stream of ``tokens`` (first token to last) on each."""
    profile = read_model_facts(model).profile()
    last = profile.n_layer // 2 - 1
    flags = ("--n-gpu-layers", str(ngl), "--context-length", "1024", "--parallel-slots", "1")
    prompt = "The lighthouse keeper wrote in the log that night"

    def run(url: str) -> tuple[str, float]:
        text = greedy(url, prompt, "m")  # also the warm-up
        return text, asyncio.run(single_stream(url, "m", tokens))

    with running_engine(model, logs, *flags, name="m") as whole:
        text_whole, tps_whole = run(whole.url)
    with rpc_worker(logs, "--devices", "gpu" if ngl else "cpu") as (endpoint, _):
        parts = ("--rpc-parts", f"{endpoint}=0-{last}")
        with running_engine(model, logs, *flags, *parts, name="m") as head:
            text_split, tps_split = run(head.url)
    return {
        "worker_layers": f"0-{last}",
        "n_layer": profile.n_layer,
        "tokens": tokens,
        "greedy_equal": text_split == text_whole,
        "whole_tps": round(tps_whole, 1),
        "split_tps": round(tps_split, 1),
        "ratio": round(tps_split / tps_whole, 3),
    }


# --- the run ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="the same steps on this CPU, small")
    parser.add_argument(
        "--skeletons", type=Path, help="folder of *.skel.gz (default: made here from the real models)"
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    logs = work / "logs"
    logs.mkdir()
    skeletons = args.skeletons
    if skeletons is None:
        skeletons = work / "skeletons"
        make_skeletons(
            skeletons, real_models() if not args.dry_run else {"smollm2": real_models()["smollm2"]}
        )
    names = [n for n in MODELS if (skeletons / MODELS[n]).is_file()]
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    started = time.monotonic()

    def step(name: str, run: Callable[[], Any]) -> None:
        t = time.monotonic()
        try:
            report[name] = run()
        except Exception as exc:  # one step's failure must not lose the others' figures
            report[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        report.setdefault("seconds", {})[name] = round(time.monotonic() - t, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"gpu_check: {name} done in {time.monotonic() - t:.0f}s", flush=True)

    step("inventory", inventory)
    models = rebuild(skeletons, work, names)
    gpu_devices = report["inventory"].get("devices", []) if isinstance(report["inventory"], dict) else []
    gpus = [Gpu(d["name"], d["memory_free"], d["memory_total"]) for d in gpu_devices if d["kind"] == "gpu"]
    first = models[names[0]]
    if args.dry_run:
        step("fit", lambda: fit({names[0]: first}, [512], []))
        step("speed", lambda: speed(first, 0, [1, 4], 16, logs))
        step("split", lambda: split(first, 0, 16, logs))
    else:
        step("fit", lambda: fit(models, [1024, 8192], gpus))
        step("auto", lambda: auto_offload(models.get("gemma3", first), gpus, logs))
        step("speed", lambda: speed(first, -1, [1, 8, 32], 128, logs))
        step("split", lambda: split(first, -1, 64, logs))
    report["seconds"]["all"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(report, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: v for k, v in report.items() if k != "inventory"}))
    return 0 if not any(isinstance(v, dict) and "error" in v for v in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

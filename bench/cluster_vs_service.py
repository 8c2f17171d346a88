"""Benchmark: llamafleet's cluster against what a platform team builds without it — llama-server pods
behind a plain Kubernetes Service — with the Kubernetes community's load generator, inference-perf.

    make bench-venv                                   # inference-perf 0.7.0 (Python 3.12) in .bench-venv
    .venv/bin/python bench/cluster_vs_service.py [--duration 60] [--rate 2] [--workloads shared_prefix,...]
        [--sides service,llamafleet_default]
    .venv/bin/python bench/cluster_vs_service.py --requests 100 \
        --rates 'shared_prefix=1,2,3;multi_turn=0.25,0.4,0.55;mixed=0.2,0.35'   # capacity sweep
    .venv/bin/python bench/cluster_vs_service.py --report LOG   # a sweep's capacities from its output

Both sides serve SmolLM2-135M from the same llama.cpp sources with N=2 replicas of the same slots,
context and threads on this machine:

  service     N llama-server processes (bench/build_llama_server.sh) behind a Service VIP made as
              kube-proxy makes one (bench/service_vip.py: iptables DNAT, random per connection; no
              proxy in user space)
  llamafleet  `llamafleet up` with N replicas behind its gateway: the default path (the gateway's
              default policy, prefix affinity) and least-load (the Model's `balancer: least-load`,
              the default before issue 31)

Workloads (inference-perf's own generators, fixed lengths, ``ignore_eos``): shared_prefix (--groups
system prompts of 512 tokens, 8 by default, many users asking 32-token questions), multi_turn
(inference-perf's conversation replay: 32 chats under one 512-token system prompt, each with its own
64 tokens and 8 turns of 32 tokens asked and 32 answered, every turn sent with the history so far),
mixed (random prompts of 32 to 1024 tokens). The tokenizer is made from the served GGUF
(bench/gguf_tokenizer.py), not fetched. Each run is a constant rate for --duration seconds, after
--warmup seconds of the same workload that are reported apart and not counted (the steady state of a
cluster already serving these apps, not each prompt's first prefill on each replica).

Goodput: requests per second that met both objectives, TTFT ≤ --ttft-slo and time per output token
≤ --tpot-slo (from inference-perf's per-request records), and attainment, the share of requests that
met both.

Goodput at one rate can be no more than that rate: where the Service already meets the objectives
for most requests, no ratio can pass rate / its goodput. ``--rates`` sweeps rates instead (each side
kept running through its rates, ``--requests`` a cell, so each cell lasts requests / rate seconds)
and reports each side's **capacity**: the highest rate at which at least ``--attainment`` (90 %) of
requests met both objectives, interpolated between the two swept rates around it (DistServe's
goodput); its ratio is ``capacity_vs_service``. A capacity outside the swept rates is a bound
(``capacity_bound``: at least the highest rate, or below the lowest), and so is the ratio then
(``ratio_bound``); each rate's goodput and p90 ratios are there too. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import signal
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine import llama_server_binary, running_llama_server
from bench.gguf_tokenizer import write as write_tokenizer
from bench.service_vip import service_vip
from nodeagent.cache.resolver import builtin_path
from nodeagent.supervisor.process import free_port
from tests.support.cluster import start_cluster, stop_cluster

REPO = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"
REPLICAS, SLOTS, CONTEXT, THREADS = 2, 4, 2048, 1


# The multi-turn workload: chats that come back, turn after turn, with their history (inference-perf's
# conversation replay): one shared 512-token system prompt, then each conversation's own 64 tokens, then
# 8 turns of 32 tokens asked and 32 answered, about 1,100 tokens by the last turn (a slot holds 2,048).
# More conversations than the two replicas have slots, so a replica must find a conversation's history
# in its host cache, or prefill it again.
CONVERSATIONS, TURNS = 32, 8


def _fixed(value: int) -> dict[str, Any]:
    return {"type": "fixed", "mean": value, "min": value, "max": value, "std_dev": 0}


def workload(name: str, groups: int) -> tuple[str, dict[str, Any]]:
    """(API type, inference-perf's data section) for one workload."""
    if name == "shared_prefix":
        shared = {"num_groups": groups, "num_prompts_per_group": 32, "system_prompt_len": 512,
                  "question_len": 32, "output_len": 32, "seed": 7}  # fmt: skip
        return "completion", {"type": "shared_prefix", "shared_prefix": shared}
    if name == "multi_turn":
        return "completion", {
            "type": "conversation_replay",
            "conversation_replay": {
                "seed": 7, "num_conversations": CONVERSATIONS, "shared_system_prompt_len": 512,
                "dynamic_system_prompt_len": _fixed(64), "turns_per_conversation": _fixed(TURNS),
                "input_tokens_per_turn": _fixed(32), "output_tokens_per_turn": _fixed(32),
                "max_model_len": CONTEXT,
            },
        }  # fmt: skip
    if name == "mixed":
        return "completion", {
            "type": "random",
            "input_distribution": {"min": 32, "max": 1024, "mean": 300, "std_dev": 250, "total_count": 2000},
            "output_distribution": {"min": 16, "max": 64, "mean": 32, "std_dev": 12, "total_count": 2000},
        }
    raise ValueError(f"unknown workload {name!r}")


def run_inference_perf(
    url: str, name: str, tokenizer: Path, args: argparse.Namespace, rate: float, duration: int, out: Path
) -> Path:
    api, data = workload(name, args.groups)
    config = {
        "load": {
            "type": "constant",
            "stages": [{"rate": rate, "duration": duration}],
            "num_workers": 2,
            # mixed's random prompts from a seed (else the clock): both sides get the same ones, and
            # each cell new ones (one seed for all would send the warm-up's prompts again, cached)
            "base_seed": zlib.crc32(f"{name} {rate} {duration} {out.name}".encode()),
        },
        "api": {"type": api, "streaming": True},
        "server": {"type": "vllm", "model_name": MODEL, "base_url": url, "ignore_eos": True},
        "tokenizer": {"pretrained_model_name_or_path": str(tokenizer)},
        "data": data,
        "report": {"request_lifecycle": {"summary": True, "per_request": True}},
        "storage": {"local_storage": {"path": str(out)}},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config))
    tool = REPO / ".bench-venv" / "bin" / "inference-perf"
    done = subprocess.run([str(tool), "-c", str(out / "config.json")], capture_output=True, text=True,
                          timeout=duration * 4 + 300)  # fmt: skip
    (out / "inference-perf.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"inference-perf exit {done.returncode} ({name}): {done.stderr.strip()[-800:]}")
    return out


def figures(report: Path, args: argparse.Namespace) -> dict[str, Any]:
    summary = json.loads((report / "summary_lifecycle_metrics.json").read_text())
    ok = summary["successes"]
    latency = ok["latency"]
    met = _met_objectives(report, args)
    seconds = summary["benchmark_time_seconds"]
    failures = summary.get("failures", {}).get("count", 0)
    return {
        "requests": ok["count"],
        "failures": failures,
        "attainment": None if met is None else round(met / max(1, ok["count"] + failures), 3),
        "ttft_p50_s": round(latency["time_to_first_token"]["median"], 3),
        "ttft_p90_s": round(latency["time_to_first_token"]["p90"], 3),
        "tpot_p50_ms": round(latency["time_per_output_token"]["median"] * 1000, 1),
        "output_tps": round(ok["throughput"]["output_tokens_per_sec"], 1),
        "goodput_rps": None if met is None else round(met / seconds, 3),
        "cached_prompt_share": round(
            ok["prompt_tokens"].get("cached", 0) / max(1.0, ok["prompt_tokens"]["total"]), 3
        ),
    }


def _met_objectives(report: Path, args: argparse.Namespace) -> int | None:
    """Requests that met both objectives, from inference-perf's per-request records: TTFT from the
    request's start to its first token, time per output token from the first token to the last."""
    path = report / "per_request_lifecycle_metrics.json"
    if not path.is_file():
        return None
    met = 0
    for record in json.loads(path.read_text()):
        if record.get("error"):
            continue
        times = ((record.get("info") or {}).get("response_metrics") or {}).get("output_token_times") or []
        if len(times) < 2:
            continue
        ttft = times[0] - record["start_time"]
        tpot = (times[-1] - times[0]) / (len(times) - 1)
        met += ttft <= args.ttft_slo and tpot <= args.tpot_slo
    return met


def ratios(row: dict[str, Any], base: dict[str, Any]) -> None:
    """A side's p90 TTFT and goodput over the Service's in the same cell, added to its row."""
    if base["ttft_p90_s"]:
        row["ttft_p90_vs_service"] = round(row["ttft_p90_s"] / base["ttft_p90_s"], 3)
    if row["goodput_rps"] is not None and base["goodput_rps"]:
        row["goodput_vs_service"] = round(row["goodput_rps"] / base["goodput_rps"], 3)


def sweep_rates(spec: str, workloads: list[str]) -> dict[str, list[float]]:
    """``--rates``: one list for every workload (``0.5,1``) or one per workload
    (``shared_prefix=1,2,3;mixed=0.2,0.3``; each workload run needs its own)."""
    if "=" not in spec:
        rates = sorted(float(r) for r in spec.split(","))
        return dict.fromkeys(workloads, rates)
    given = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, values = part.partition("=")
        given[name.strip()] = sorted(float(r) for r in values.split(","))
    missing = [w for w in workloads if w not in given]
    if missing:
        raise ValueError(f"no rates for {', '.join(missing)}")
    return {w: given[w] for w in workloads}


def warm_up(
    url: str, name: str, tokenizer: Path, args: argparse.Namespace, rate: float, out: Path, side: str
) -> dict[str, Any]:
    """``--warmup`` seconds of the workload before its measured cells, not counted in them: a cluster
    that has been serving its apps has their system prompts cached, so the measured cells are the
    steady state, not the first prefill of each prompt on each replica. Its own figures come back as
    ``warmup_*`` (the cold start, where routing saves the most prefills)."""
    if args.warmup <= 0:
        return {}
    row = figures(run_inference_perf(url, name, tokenizer, args, rate, args.warmup, out / "warmup"), args)
    print(f"cluster_vs_service: {side} {name} warm-up at {rate}/s: {row}", flush=True)
    return {"warmup_attainment": row["attainment"], "warmup_ttft_p90_s": row["ttft_p90_s"]}


def capacity(by_rate: dict[float, dict[str, Any]], attainment: float) -> float | None:
    """The highest rate at which at least ``attainment`` of requests met the objectives: the last
    swept rate that did, moved toward the next (which did not) by where the attainment line between
    the two crosses the target. None when even the lowest rate missed it."""
    rates = sorted(by_rate)
    best = None
    for low, high in zip(rates, [*rates[1:], None], strict=True):
        got = by_rate[low]["attainment"]
        if got is None or got < attainment:
            break
        best = low
        nxt = None if high is None else by_rate[high]["attainment"]
        if nxt is not None and nxt < attainment and high is not None:
            best = low + (high - low) * (got - attainment) / (got - nxt)
    return None if best is None else round(best, 3)


def capacities(
    cells: dict[str, dict[str, dict[float, dict[str, Any]]]], attainment: float
) -> dict[str, dict[str, Any]]:
    """Each workload's and side's capacity and its ratio to the Service's, from a sweep's cells
    (workload → side → rate → figures). A capacity outside the swept rates is a bound:
    ``capacity_bound`` is ``at_least`` when every rate met the target (the capacity is at least the
    highest) and ``below`` when none did (it is below the lowest, ``capacity_rps`` None); the ratio
    is then a bound too (``ratio_bound``: ``at_least`` or ``at_most``), None where both are."""
    results: dict[str, dict[str, Any]] = {}
    for name, by_side in cells.items():
        bounds = {side: _bounded_capacity(by_rate, attainment) for side, by_rate in by_side.items()}
        base_value, base_bound = bounds["service"]
        for side, by_rate in by_side.items():
            value, bound = bounds[side]
            row: dict[str, Any] = {
                "capacity_rps": None if bound == "below" else value,
                "capacity_bound": bound,
            }
            if side != "service":
                row |= _capacity_ratio(value, bound, base_value, base_bound)
                for rate, figures_at in by_rate.items():  # at each rate too, for where no capacity is
                    if rate in by_side["service"]:
                        ratios(figures_at, by_side["service"][rate])
            row["by_rate"] = {str(rate): figures_at for rate, figures_at in sorted(by_rate.items())}
            results.setdefault(name, {})[side] = row
    return results


_CELL_LINE = re.compile(r"^cluster_vs_service: (\S+) (\S+) at ([0-9.]+)/s: (\{.*\})$")


def report_from_log(log: Path, attainment: float) -> int:
    """``--report``: the capacities of the cells a sweep printed (warm-ups are not cells)."""
    cells: dict[str, dict[str, dict[float, dict[str, Any]]]] = {}
    for line in log.read_text().splitlines():
        if match := _CELL_LINE.match(line):
            side, name, rate, row = match.groups()
            cells.setdefault(name, {}).setdefault(side, {})[float(rate)] = ast.literal_eval(row)
    complete = {name: by_side for name, by_side in cells.items() if "service" in by_side}
    if not complete:
        print(f"cluster_vs_service: no Service cells in {log}", file=sys.stderr)
        return 1
    print(json.dumps({"attainment": attainment, "results": capacities(complete, attainment)}))
    return 0


def _bounded_capacity(by_rate: dict[float, dict[str, Any]], attainment: float) -> tuple[float, str]:
    """(value, bound): the capacity and ``exact``; the highest rate and ``at_least``; the lowest
    rate and ``below``."""
    got = capacity(by_rate, attainment)
    if got is None:
        return min(by_rate), "below"
    return got, "at_least" if got == max(by_rate) else "exact"


def _capacity_ratio(value: float, bound: str, base: float, base_bound: str) -> dict[str, Any]:
    """Our capacity over the Service's, and which way it is bounded when either is a bound."""
    lower = {"exact": "exact", "at_least": "at_least", "below": "at_most"}[bound]  # ours, read as ≥ / ≤
    upper = {"exact": "exact", "at_least": "at_most", "below": "at_least"}[base_bound]  # 1 / base
    kinds = {lower, upper} - {"exact"}
    if len(kinds) > 1:  # one bound each way: nothing is known
        return {"capacity_vs_service": None, "ratio_bound": None}
    return {"capacity_vs_service": round(value / base, 3), "ratio_bound": kinds.pop() if kinds else "exact"}


@contextmanager
def service_side(logs: Path) -> Iterator[str]:
    binary = llama_server_binary()
    if binary is None:
        raise SystemExit("cluster_vs_service: no llama-server; run bench/build_llama_server.sh first")
    model = builtin_path(MODEL)
    with ExitStack() as stack:
        urls = [stack.enter_context(running_llama_server(binary, model, THREADS, SLOTS, CONTEXT, logs))
                for _ in range(REPLICAS)]  # fmt: skip
        ports = [int(u.rsplit(":", 1)[1]) for u in urls]
        yield stack.enter_context(service_vip(free_port("127.0.0.1"), ports))


@contextmanager
def llamafleet_side(tmp: Path, policy: str | None) -> Iterator[str]:
    balancer = f"    balancer: {policy}\n" if policy else ""
    yaml = (
        f"models:\n  - name: {MODEL}\n    source: builtin:{MODEL}\n    replicas: {REPLICAS}\n"
        f"    parallelSlots: {SLOTS}\n    contextLength: {CONTEXT}\n    threads: {THREADS}\n{balancer}"
    )
    tmp.mkdir(parents=True, exist_ok=True)
    cluster = start_cluster(tmp, yaml, [MODEL], short_intervals=False)
    try:
        yield cluster.base_url
    finally:
        stop_cluster(cluster)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=60, help="seconds of load per workload and side")
    parser.add_argument("--rate", type=float, default=2.0, help="requests per second (constant)")
    parser.add_argument(
        "--rates", default="",
        help="rates to sweep, comma-separated, for every workload (0.5,1) or per workload "
        "(shared_prefix=1,2;multi_turn=0.5,1;mixed=0.2,0.3): each side's capacity (see above)",
    )  # fmt: skip
    parser.add_argument(
        "--requests", type=int, default=0, help="with --rates: requests a cell (it lasts requests / rate s)"
    )
    parser.add_argument(
        "--attainment", type=float, default=0.9, help="capacity's share of requests within the objectives"
    )
    parser.add_argument("--workloads", default="shared_prefix,multi_turn,mixed")
    parser.add_argument(
        "--sides", default="service,llamafleet_default,llamafleet_least_load",
        help="what to run (the service is the baseline every ratio needs)",
    )  # fmt: skip
    parser.add_argument(
        "--groups", type=int, default=8,
        help="system prompts of the shared-prefix workload (default 8: more than one "
        "server's slots, as a cluster serving several apps has; with no more than a server's slots, "
        "every server keeps every prompt cached whatever the routing)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=int, default=60,
        help="seconds of each workload, at the (lowest) rate, before its measured cells on each side; "
        "reported apart (warmup_*), not counted (0: none)",
    )  # fmt: skip
    parser.add_argument("--ttft-slo", type=float, default=2.0, help="goodput's TTFT objective, seconds")
    parser.add_argument(
        "--tpot-slo", type=float, default=0.1, help="goodput's time per output token, seconds"
    )
    parser.add_argument(
        "--report", metavar="LOG",
        help="print a sweep's capacities again from its output (its cell lines), running nothing: "
        "for a sweep stopped before its last line, or another --attainment",
    )  # fmt: skip
    args = parser.parse_args()
    # A stop by `kill` (SIGTERM) unwinds like Ctrl-C: the servers stop and the Service VIP's NAT rules go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.report:
        return report_from_log(Path(args.report), args.attainment)
    if not (REPO / ".bench-venv" / "bin" / "inference-perf").exists():
        print("cluster_vs_service: no .bench-venv/bin/inference-perf; run make bench-venv", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="cluster-vs-service-"))
    tokenizer = write_tokenizer(builtin_path(MODEL), tmp / "tokenizer")
    sides = {
        "service": lambda: service_side(tmp),
        "llamafleet_default": lambda: llamafleet_side(tmp / "default", None),
        "llamafleet_least_load": lambda: llamafleet_side(tmp / "least-load", "least-load"),
    }
    unknown = set(args.sides.split(",")) - set(sides)
    if unknown or "service" not in args.sides.split(","):
        parser.error(f"--sides: pick among {', '.join(sides)}, service included")
    if args.rates:
        if args.requests <= 0:
            parser.error("--rates needs --requests (how many requests each cell sends)")
        return sweep(args, sides, tokenizer, tmp)
    results: dict[str, dict[str, Any]] = {}
    for side, start in sides.items():
        if side not in args.sides.split(","):
            continue
        with start() as url:
            for name in args.workloads.split(","):
                out = tmp / side / name
                warm = warm_up(url, name, tokenizer, args, args.rate, out, side)
                report = run_inference_perf(url, name, tokenizer, args, args.rate, args.duration, out)
                results.setdefault(name, {})[side] = figures(report, args) | warm
                print(f"cluster_vs_service: {side} {name}: {results[name][side]}", flush=True)
    for rows in results.values():
        for side, row in rows.items():
            if side != "service":
                ratios(row, rows["service"])
    settings = {"rate": args.rate, "duration_s": args.duration, "warmup_s": args.warmup,
                "groups": args.groups, "ttft_slo_s": args.ttft_slo, "tpot_slo_s": args.tpot_slo}  # fmt: skip
    print(json.dumps(settings | {"results": results}))
    return 0


def sweep(args: argparse.Namespace, sides: dict[str, Any], tokenizer: Path, tmp: Path) -> int:
    """Every side through every rate of ``--rates`` on every workload; capacities and their ratios."""
    try:
        rates_of = sweep_rates(args.rates, args.workloads.split(","))
    except ValueError as e:
        raise SystemExit(f"cluster_vs_service: --rates: {e}") from None
    cells: dict[str, dict[str, dict[float, dict[str, Any]]]] = {}  # workload → side → rate → figures
    warmups: dict[str, dict[str, dict[str, Any]]] = {}
    for side, start in sides.items():
        if side not in args.sides.split(","):
            continue
        with start() as url:
            for name in args.workloads.split(","):
                rates = rates_of[name]
                warm = warm_up(url, name, tokenizer, args, rates[0], tmp / side / name, side)
                cells.setdefault(name, {}).setdefault(side, {})
                warmups.setdefault(name, {})[side] = warm
                for rate in rates:
                    duration = max(1, round(args.requests / rate))
                    out = tmp / side / name / f"rate-{rate}"
                    row = figures(run_inference_perf(url, name, tokenizer, args, rate, duration, out), args)
                    cells.setdefault(name, {}).setdefault(side, {})[rate] = row
                    print(f"cluster_vs_service: {side} {name} at {rate}/s: {row}", flush=True)
    results = capacities(cells, args.attainment)
    for name, by_side in warmups.items():
        for side, warm in by_side.items():
            results[name][side] |= warm
    settings = {"rates": rates_of, "requests": args.requests, "warmup_s": args.warmup, "groups": args.groups,
                "ttft_slo_s": args.ttft_slo,
                "tpot_slo_s": args.tpot_slo, "attainment": args.attainment}  # fmt: skip
    print(json.dumps(settings | {"results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

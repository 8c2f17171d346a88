"""Benchmark: speculative decoding (n-gram prompt lookup, and a draft model) on and off, in one run.

    .venv/bin/python bench/speculative.py [--models smollm2,gemma3] [--rounds 4] [--threads 2]
        [--no-draft-model]

One engine per model runs with ``--speculative ngram``; every request is sent once as is and once
with ``"speculative": false`` (the engine's own opt-out), alternating which goes first, so both
see the same weights, slots, threads and machine noise. Greedy, ``max_tokens`` 192.

Workloads:
- quoting: the answer repeats its input — a code edit (rename a variable), a spelling fix written
  out in full, a list copied with one change, a quotation;
- free: the answer is new text — a story, an explanation, advice (drafts rarely match);
- default path: the same free prompts on an engine started with the defaults (speculation off), to
  show that an engine without it is unchanged (the "off" figures of the free row measure the same).

Draft-model rows (SmolLM2 only: no smaller model of either vocabulary is installable here, so the
draft is SmolLM2's own weights re-quantized to Q2_K by llama.cpp — the same vocabulary, a worse
model, not a faster one on a CPU): ``draft_model`` lets the engine's measured step costs decide how
much to draft (the default), ``draft_model_forced`` verifies at least 4 tokens a step
(``--draft-min 4``), to show what drafting costs where it does not pay.

Measured per request: decode tokens/s (llama-server's ``timings.predicted_per_second``: tokens after
the first over the time from first token to last), the acceptance rate, and that the text is the
same with and without (it must be: greedy verification). Figures are medians of the per-prompt
ratios over rounds. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nodeagent.cache.resolver import builtin_path  # noqa: E402
from tests.support import oneshot  # noqa: E402
from tests.support.draft import requantized  # noqa: E402
from tests.support.engine import EngineProcess, running_engine  # noqa: E402
from tests.support.synthetic_gguf import gemma3_path  # noqa: E402

TOKENS = 192
CODE = """```python
def total(items):
    x = 0
    for item in items:
        x += item.price * item.quantity
    return x

def average(items):
    x = total(items)
    return x / len(items)
```"""
ARTICLE = (
    "The city council voted on Tuesday to extend the river path by four kilometres. The extension "
    "will connect the old harbour with the new railway station. Work is expected to start in March "
    "and to last eighteen months. The council said the path will be open to cyclists and walkers "
    "and will have lighting along its whole length."
)
TYPOS = (
    "The citty council voted on Tuesday to extnd the river path by four kilometres. The extension will "
    "conect the old harbour with the new railway staton. Work is expected to start in March and to last "
    "eighteen monthes."
)
NAMES = ["Ann", "Bob", "Cid", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lou", "Max"]
# Answers that quote their input, as the 135M and 270M models do follow these (a model that does
# not quote gets nothing from n-gram drafts: its acceptance shows it).
QUOTING = [
    f"Rewrite this code with the variable `x` renamed to `count`:\n\n{CODE}",
    f"Fix the spelling mistakes in this text and write it out again in full:\n\n{TYPOS}",
    "Copy this list, but change 'apples' to 'pears':\n"
    + "\n".join(f"- {3 * (k + 1)} apples for {name}" for k, name in enumerate(NAMES)),
    f"Repeat this text exactly:\n\n{ARTICLE}",
]
FREE = [
    "Write a short story about a fox who learns to sail.",
    "Explain how a refrigerator keeps food cold, for a ten-year-old.",
    "Give me five tips for sleeping better, with a sentence on each.",
]


def ask(engine: EngineProcess, prompt: str, speculative: bool) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": TOKENS, "temperature": 0,
            "speculative": speculative}  # fmt: skip
    response = oneshot.post(f"{engine.url}/v1/chat/completions", json=body, timeout=600)
    response.raise_for_status()
    answer = response.json()
    return {
        "text": answer["choices"][0]["message"]["content"],
        "tps": answer["timings"]["predicted_per_second"],
        "tokens": answer["usage"]["completion_tokens"],
    }


def counter(engine: EngineProcess, name: str) -> float:
    text = oneshot.get(f"{engine.url}/metrics", timeout=30).text
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def workload(engine: EngineProcess, prompts: list[str], rounds: int) -> dict[str, Any]:
    ratios: list[float] = []
    on_tps: list[float] = []
    off_tps: list[float] = []
    same = True
    drafted0 = counter(engine, "llamafleet_engine_speculative_draft_tokens_total")
    accepted0 = counter(engine, "llamafleet_engine_speculative_accepted_tokens_total")
    for round_ in range(rounds):
        for k, prompt in enumerate(prompts):
            first_on = (round_ + k) % 2 == 0
            runs = {s: ask(engine, prompt, s) for s in ((True, False) if first_on else (False, True))}
            same = same and runs[True]["text"] == runs[False]["text"]
            on_tps.append(runs[True]["tps"])
            off_tps.append(runs[False]["tps"])
            ratios.append(runs[True]["tps"] / runs[False]["tps"])
    drafted = counter(engine, "llamafleet_engine_speculative_draft_tokens_total") - drafted0
    accepted = counter(engine, "llamafleet_engine_speculative_accepted_tokens_total") - accepted0
    return {
        "decode_ratio": round(statistics.median(ratios), 3),
        "on_tokens_per_s": round(statistics.median(on_tps), 1),
        "off_tokens_per_s": round(statistics.median(off_tps), 1),
        "acceptance": round(accepted / drafted, 3) if drafted else None,
        "drafted_per_request": round(drafted / len(ratios), 1),
        "same_text": same,
        "requests": len(ratios),
    }


def default_path(model: Path, threads: int, rounds: int, log_dir: Path) -> dict[str, Any]:
    """An engine with the defaults: speculation off, so a request's own flag changes nothing."""
    with running_engine(model, log_dir, "--n-threads", str(threads)) as engine:
        row = workload(engine, FREE, max(1, rounds // 2))
    return {"decode_ratio": row["decode_ratio"], "tokens_per_s": row["off_tokens_per_s"],
            "drafted_per_request": row["drafted_per_request"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="smollm2,gemma3")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--draft-max", type=int, default=8)
    parser.add_argument("--no-draft-model", dest="draft_model", action="store_false",
                        help="skip the draft-model rows")  # fmt: skip
    args = parser.parse_args()
    paths = {"smollm2": builtin_path("smollm2-135m"), "gemma3": gemma3_path()}
    report: dict[str, Any] = {"bench": "speculative", "tokens": TOKENS, "rounds": args.rounds,
                              "threads": args.threads, "draft_max": args.draft_max}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            path = paths[name]
            assert path is not None, f"{name} is not installed (make install)"
            flags = ("--speculative", "ngram", "--draft-max", str(args.draft_max), "--n-threads",
                     str(args.threads), "--parallel-slots", "4", "--context-length", "4096")  # fmt: skip
            with running_engine(path, Path(tmp), *flags, name=name) as engine:
                ask(engine, FREE[0], False)  # warm up
                rows = {
                    "quoting": workload(engine, QUOTING, args.rounds),
                    "free": workload(engine, FREE, args.rounds),
                }
            rows["default_path"] = default_path(path, args.threads, args.rounds, Path(tmp))
            if name == "smollm2" and args.draft_model:
                draft = requantized(path, Path(tmp) / "smollm2-q2_k.gguf", "Q2_K")
                for label, extra in (("draft_model", ()), ("draft_model_forced", ("--draft-min", "4"))):
                    drafting = ("--speculative", "draft", "--draft-model-path", str(draft), *extra,
                                *flags[2:])  # fmt: skip
                    with running_engine(path, Path(tmp), *drafting, name=name) as engine:
                        ask(engine, FREE[0], False)
                        rows[label] = {
                            "quoting": workload(engine, QUOTING, args.rounds),
                            "free": workload(engine, FREE, args.rounds),
                        }
            report[name] = rows
            print(name, json.dumps(rows), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()

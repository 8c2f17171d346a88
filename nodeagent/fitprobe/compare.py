"""The estimator against llama.cpp: run the probe in a child for one cell and set both side by side.

Used by bench/fit_accuracy.py (the whole matrix) and the accuracy tests (a CPU subset). The
bound is the issue's: every component within 3% of llama.cpp's figure, or within 4 MiB where
3% is less than that (small buffers, where the log's rounding and the allocator's alignment
dominate).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llamafleet.fit.components import ContextParams, repack_types
from llamafleet.fit.estimate import Estimate, Offload, estimate
from llamafleet.fit.profile import ModelProfile
from nodeagent.hardware.inventory import collect

MIB = 1024 * 1024
RELATIVE_BOUND = 0.03
ABSOLUTE_BOUND = 4 * MIB
COMPONENTS = ("weights", "kv", "compute", "output", "total")
PROBE_TIMEOUT_S = 300


class ProbeFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Cell:
    """One set of parameters the probe and the estimator both evaluate."""

    ctx: int
    parallel: int = 1
    kv_type: str = "f16"
    flash_attn: bool = False
    unified: bool = False
    ubatch: int = 512
    mmap: bool = True

    def params(self) -> ContextParams:
        return ContextParams(
            n_ctx_per_seq=self.ctx, n_seq=self.parallel, n_batch=max(512, self.ubatch), n_ubatch=self.ubatch,
            type_k=self.kv_type, type_v=self.kv_type, flash_attn=self.flash_attn, unified=self.unified,
        )  # fmt: skip

    def flags(self) -> list[str]:
        out = ["--ctx", str(self.ctx), "--parallel", str(self.parallel), "--kv-type", self.kv_type,
               "--ubatch", str(self.ubatch), "--batch", str(max(512, self.ubatch))]  # fmt: skip
        out += ["--flash-attn"] if self.flash_attn else []
        out += ["--unified"] if self.unified else []
        return out + ([] if self.mmap else ["--no-mmap"])


def build_repack_types() -> frozenset[str]:
    """The weight types this machine's llama.cpp build repacks (its CPU features, from the device probe)."""
    return repack_types(asyncio.run(collect()).cpu_flags)


def within_bound(predicted: int, observed: int) -> bool:
    return abs(predicted - observed) <= max(RELATIVE_BOUND * observed, ABSOLUTE_BOUND)


def run_probe(model: Path, cell: Cell, dry_run: bool = False, python: str = sys.executable) -> dict[str, int]:
    """llama.cpp's own buffer totals for this cell (bytes by kind), from a load in a child.

    ``dry_run``: llama.cpp's no_alloc plan instead of a real load; it reads no weights and
    matches a real load without mmap (the cell must say mmap=False).
    """
    flags = [*cell.flags(), "--dry-run"] if dry_run else cell.flags()
    done = subprocess.run([python, "-m", "nodeagent.fitprobe", str(model), *flags],
                          capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)  # fmt: skip
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ProbeFailed(
            f"probe exit {done.returncode} on {model.name} {cell}: {done.stderr.strip()[-500:]}"
        )
    totals: dict[str, int] = json.loads(lines[-1])["totals"]
    return totals


def predicted_components(est: Estimate) -> dict[str, int]:
    cpu = est.device("CPU")  # this machine: everything on the CPU
    return {
        "weights": cpu.weights_bytes,
        "kv": cpu.kv_bytes,
        "compute": cpu.compute_bytes,
        "output": cpu.output_bytes,
        "total": cpu.buffers_bytes,
    }


def observed_components(totals: dict[str, int]) -> dict[str, int]:
    return {
        "weights": totals["model"],
        "kv": totals["kv"],
        "compute": totals["compute"],
        "output": totals["output"],
        "total": sum(totals[k] for k in ("model", "kv", "compute", "output")),
    }


def compare_cell(
    model: Path, profile: ModelProfile, cell: Cell, repack: Iterable[str] = (), dry_run: bool = False
) -> dict[str, tuple[int, int]]:
    """Component → (predicted, observed) bytes."""
    if dry_run and cell.mmap:
        raise ValueError("a dry run maps nothing: compare it with a cell that has mmap=False")
    est = estimate(profile, cell.params(), Offload(use_mmap=cell.mmap, cpu_repack_types=frozenset(repack)))
    predicted = predicted_components(est)
    observed = observed_components(run_probe(model, cell, dry_run))
    return {name: (predicted[name], observed[name]) for name in COMPONENTS}

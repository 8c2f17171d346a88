"""Parsing llama.cpp's buffer log lines (taken from real runs of this llama.cpp version)."""

from __future__ import annotations

from nodeagent.fitprobe.buffers import MIB, parse_buffers

LOG = """\
print_info: file size   = 92.10 MiB (5.74 BPW)
load_tensors:   CPU_Mapped model buffer size =    92.10 MiB
llama_context:        CPU  output buffer size =     0.38 MiB
llama_kv_cache:        CPU KV buffer size =    90.00 MiB
llama_kv_cache: size =   90.00 MiB (  2048 cells,  30 layers,  2/2 seqs), K (f16):   45.00 MiB
llama_kv_cache:        CPU KV buffer size =     6.00 MiB
sched_reserve:        CPU compute buffer size =   102.51 MiB
load_tensors:        CUDA0 model buffer size =  1024.00 MiB
"""


def test_buffer_lines_sum_by_kind_and_device() -> None:
    buffers = parse_buffers(LOG)
    assert buffers.model == {"CPU_Mapped": round(92.10 * MIB), "CUDA0": 1024 * MIB}
    assert buffers.kv == {"CPU": 96 * MIB}  # a sliding-window model logs two KV caches
    assert buffers.output == {"CPU": round(0.38 * MIB)}
    assert buffers.compute == {"CPU": round(102.51 * MIB)}
    assert buffers.totals()["model"] == round(92.10 * MIB) + 1024 * MIB


def test_summary_and_file_size_lines_are_not_buffers() -> None:
    assert parse_buffers("print_info: file size   = 92.10 MiB (5.74 BPW)\n").totals() == {
        "model": 0, "kv": 0, "output": 0, "compute": 0,
    }  # fmt: skip


def test_a_dry_runs_kv_comes_from_each_caches_size_line() -> None:
    dry = """\
llama_kv_cache:        CPU KV buffer size =     0.00 MiB
llama_kv_cache: size =   24.00 MiB (  2048 cells,   3 layers,  4/4 seqs), K (f16):   12.00 MiB
llama_kv_cache:        CPU KV buffer size =     0.00 MiB
llama_kv_cache: size =   60.00 MiB (  1024 cells,  15 layers,  4/4 seqs), K (f16):   30.00 MiB
print_info: file size   = 235.16 MiB (7.36 BPW)
"""
    buffers = parse_buffers(dry)
    assert buffers.kv == {"CPU": 0}
    assert buffers.kv_planned == 84 * MIB  # the sliding-window cache and the full one

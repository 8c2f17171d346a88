"""Memory curves by GPU layer count agree with the estimator point by point."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from llamafleet.fit.components import ContextParams
from llamafleet.fit.curves import offload_curves
from llamafleet.fit.estimate import Offload, Target, estimate
from llamafleet.fit.profile import ModelProfile
from nodeagent.gguf.model_facts import read_model_facts
from tests.support.profiles import llama_like

SPLITS = [((1.0,), ("gpu",)), ((3.0, 1.0), ("gpu", "gpu")), ((1.0, 1.0, 2.0), ("gpu", "gpu", "rpc"))]


def profiles(smollm2_path: Path) -> list[ModelProfile]:
    untied = llama_like(n_layer=12)
    tied = replace(
        llama_like(n_layer=9, tied=True), sliding_window=256, swa_layers=(True, False) * 4 + (True,)
    )
    return [untied, tied, read_model_facts(smollm2_path).profile()]


@pytest.mark.parametrize(("shares", "kinds"), SPLITS, ids=["one-gpu", "two-gpus-3-1", "gpus-and-rpc"])
@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_curves_equal_the_estimate_for_every_layer_count(
    smollm2_path: Path, shares: tuple[float, ...], kinds: tuple[str, ...], mmap: bool
) -> None:
    params = ContextParams(2048, 2, type_k="q8_0", type_v="q8_0", prompt_cache_bytes=384 << 20)
    repack = frozenset({"Q4_K"})
    for profile in profiles(smollm2_path):
        curves = offload_curves(profile, params, shares, kinds, repack, mmap)
        for g in range(profile.n_layer + 2):
            targets = tuple(
                Target(f"D{i}", kind, share)
                for i, (share, kind) in enumerate(zip(shares, kinds, strict=True))
            )
            est = estimate(profile, params, Offload(g, targets if g else (), mmap, repack))
            assert curves.host[g] == est.host_bytes, (profile.name, g)
            if g:
                for d in range(len(shares)):
                    assert curves.device[g, d] == est.devices[d + 1].total_bytes, (profile.name, g, d)


def test_the_engines_prompt_cache_is_host_memory_beside_llama_cpps_buffers(smollm2_path: Path) -> None:
    """Counted on the host whatever the offload, as the CPU's reserve: llama.cpp's own buffers (what its
    log reports, and what the fit is checked against) are unchanged."""
    profile = read_model_facts(smollm2_path).profile()
    plain = ContextParams(1024, 4)
    cached = replace(plain, prompt_cache_bytes=1 << 30)
    gpu = (Target("D0", "gpu", 1.0),)
    for offload in (Offload(), Offload(profile.n_layer + 1, gpu)):
        without, with_cache = estimate(profile, plain, offload), estimate(profile, cached, offload)
        assert with_cache.host_bytes - without.host_bytes == 1 << 30
        assert with_cache.vram_bytes == without.vram_bytes
        cpu, cpu_before = with_cache.devices[0], without.devices[0]
        assert cpu.buffers_bytes == cpu_before.buffers_bytes
        assert cpu.overhead_bytes == 1 << 30
    with pytest.raises(ValueError, match="prompt cache"):
        replace(plain, prompt_cache_bytes=-1).check()

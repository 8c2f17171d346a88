"""Per-request sampling: OpenAI/llama.cpp parameters → a native llama.cpp sampler chain.

The chain runs in C on the logits of one batch row, so sampling costs the same as in
llama-server. Defaults follow llama-server's (temperature 0.8, top_k 40, top_p 0.95,
min_p 0.05); temperature 0 means greedy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def penalized(self) -> bool:
        return self.repeat_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


class SamplerChain:
    """A native sampler chain owned by one sequence; free it when the sequence ends.

    Greedy decoding without penalties skips the chain: it takes the argmax of the logits row
    directly (plus any logit bias), instead of building llama.cpp's candidate array of the
    whole vocabulary — 3 MB per token for gemma3's 262k-token vocabulary.
    """

    def __init__(self, params: SamplingParams, n_vocab: int) -> None:
        self.params = params
        self._n_vocab = n_vocab
        self._chain: Any = None
        self._bias_ids = np.fromiter(params.logit_bias, dtype=np.int64)
        self._bias_values = np.fromiter(params.logit_bias.values(), dtype=np.float32)
        if params.greedy and not params.penalized:
            return
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self._chain = llama_cpp.llama_sampler_chain_init(chain_params)
        add = self._add
        if params.logit_bias:
            bias = (llama_cpp.llama_logit_bias * len(params.logit_bias))(
                *(llama_cpp.llama_logit_bias(token, value) for token, value in params.logit_bias.items())
            )
            add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), bias))
        if params.penalized:
            add(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab,
                    params.repeat_last_n,
                    params.repeat_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                )
            )
        if params.greedy:
            add(llama_cpp.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
        add(llama_cpp.llama_sampler_init_dist(seed))

    def _add(self, sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(self._chain, sampler)

    def accept(self, tokens: Iterable[int]) -> None:
        """Feed prompt tokens to the penalty window (sampled tokens are accepted by ``sample``)."""
        if self.params.penalized:
            for token in tokens:
                llama_cpp.llama_sampler_accept(self._chain, token)

    def sample(self, ctx: Any, batch_index: int) -> int:
        if self._chain is not None:
            return int(llama_cpp.llama_sampler_sample(self._chain, ctx, batch_index))
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, batch_index), shape=(self._n_vocab,))
        if self._bias_ids.size:
            row = row.copy()
            row[self._bias_ids] += self._bias_values
        return int(row.argmax())

    def free(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None

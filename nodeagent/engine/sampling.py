"""Per-request sampling: OpenAI/llama.cpp parameters → a native llama.cpp sampler chain.

The chain runs in C on the logits of one batch row, so sampling costs the same as in
llama-server. Defaults follow llama-server's (temperature 0.8, top_k 40, top_p 0.95,
min_p 0.05); temperature 0 means greedy. A grammar (nodeagent/engine/grammar.py) constrains the
choice: the unconstrained pick is checked first and the candidates filtered only when it fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from nodeagent.engine.grammar import Candidates, Grammar


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
    grammar: str = ""  # GBNF the output must follow ('' unconstrained)

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

    def __init__(self, params: SamplingParams, n_vocab: int, vocab: Any = None) -> None:
        self.params = params
        self._n_vocab = n_vocab
        self._chain: Any = None
        self._grammar = Grammar(vocab, params.grammar) if params.grammar else None
        self._candidates = Candidates(n_vocab) if params.grammar else None
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
        if self._grammar is not None:
            return self._sample_constrained(ctx, batch_index)
        if self._chain is not None:
            return int(llama_cpp.llama_sampler_sample(self._chain, ctx, batch_index))
        return self._argmax(logits_row(ctx, batch_index, self._n_vocab))

    def _argmax(self, row: np.ndarray) -> int:
        if self._bias_ids.size:
            row = row.copy()
            row[self._bias_ids] += self._bias_values
        return int(row.argmax())

    def _sample_constrained(self, ctx: Any, batch_index: int) -> int:
        """The unconstrained choice first, made as cheaply as without a grammar; the whole vocabulary
        is filtered only when the grammar rejects it."""
        grammar, candidates = self._grammar, self._candidates
        assert grammar is not None
        assert candidates is not None
        row = logits_row(ctx, batch_index, self._n_vocab)
        if self._chain is None:
            token = self._argmax(row)
        elif not self.params.penalized:  # in C; its accept() is a no-op without penalties
            token = int(llama_cpp.llama_sampler_sample(self._chain, ctx, batch_index))
        else:  # the penalty window must not see a token the grammar then rejects
            token = self._pick(candidates, row, None)
        if not grammar.allows(token):
            token = self._pick(candidates, row, grammar)
        grammar.accept(token)
        if self._chain is not None and self.params.penalized:
            llama_cpp.llama_sampler_accept(self._chain, token)
        return token

    def _pick(self, candidates: Candidates, row: np.ndarray, grammar: Grammar | None) -> int:
        if self._chain is None and self._bias_ids.size:
            row = row.copy()
            row[self._bias_ids] += self._bias_values
        pointer = candidates.load(row) if grammar is None else self._restrict(candidates, row, grammar)
        if self._chain is not None:
            llama_cpp.llama_sampler_apply(self._chain, pointer)
            return candidates.selected()
        return candidates.best()

    def _restrict(self, candidates: Candidates, row: np.ndarray, grammar: Grammar) -> Any:
        """The candidates the grammar allows. When the chain keeps at most the top ``SHORTLIST``
        tokens anyway (greedy, or top_k up to it), the grammar checks only the model's SHORTLIST
        most likely tokens — what it would keep of them is the same — and the whole vocabulary
        only when none of those is allowed: checking 262k tokens (gemma3) costs milliseconds."""
        k = self.params.top_k
        narrow = self.params.greedy or 0 < k <= SHORTLIST
        if self._n_vocab > SHORTLIST and narrow and not self.params.logit_bias:  # a bias may lift any token
            shortlist = np.argpartition(row, -SHORTLIST)[-SHORTLIST:].astype(np.int32)
            pointer = candidates.load(row, shortlist)
            grammar.restrict(pointer)
            if candidates.any_allowed():
                return pointer
        pointer = candidates.load(row)
        grammar.restrict(pointer)
        return pointer

    def free(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar is not None:
            self._grammar.free()
            self._grammar = None


SHORTLIST = 1024


def logits_row(ctx: Any, batch_index: int, n_vocab: int) -> np.ndarray:
    """The logits of one batch row, as a view (valid until the next decode)."""
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, batch_index), shape=(n_vocab,))

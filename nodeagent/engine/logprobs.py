"""Log-probabilities of generated tokens, from the same logits row the sampler chose from.

As llama-server does for OpenAI's ``logprobs``: the model's own distribution (a log-softmax of
the raw logits over the whole vocabulary), before temperature, top-k/p or a grammar reshaped it;
greedy decoding therefore always picks the token with the highest logprob. Computed only for
sequences that ask (one pass over the row, plus a partial sort for ``top_logprobs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    piece: bytes
    logprob: float
    top: tuple[tuple[int, bytes, float], ...] = ()  # the most likely tokens at this step, best first

    @staticmethod
    def _entry(piece: bytes, logprob: float) -> dict[str, object]:
        return {"token": piece.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(piece)}

    def chat(self) -> dict[str, object]:
        """OpenAI's chat shape: token, logprob, bytes and top_logprobs."""
        top = [self._entry(piece, lp) for _, piece, lp in self.top]
        return self._entry(self.piece, self.logprob) | {"top_logprobs": top}


def token_logprob(row: np.ndarray, token: int, top_n: int, piece: Callable[[int], bytes]) -> TokenLogprob:
    """``token``'s logprob in ``row`` and the ``top_n`` most likely tokens'."""
    high = float(row.max())
    log_total = high + float(np.log(np.exp(row - high, dtype=np.float64).sum()))
    top: tuple[tuple[int, bytes, float], ...] = ()
    if top_n > 0:
        best = np.argpartition(row, -top_n)[-top_n:]
        best = best[np.argsort(row[best])[::-1]]
        top = tuple((int(t), piece(int(t)), float(row[t]) - log_total) for t in best)
    return TokenLogprob(token, piece(token), float(row[token]) - log_total, top)


def completion_logprobs(tokens: list[TokenLogprob], offset: int) -> dict[str, object]:
    """The legacy completions shape: parallel lists, with each token's text offset from ``offset``."""
    texts = [t.piece.decode("utf-8", "replace") for t in tokens]
    offsets, at = [], offset
    for text in texts:
        offsets.append(at)
        at += len(text)
    return {
        "tokens": texts,
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{p.decode("utf-8", "replace"): lp for _, p, lp in t.top} for t in tokens],
        "text_offset": offsets,
    }

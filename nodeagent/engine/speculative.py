"""Speculative decoding by n-gram prompt lookup: guess a sequence's next tokens from its own context.

Output that quotes its input — a code edit, a summary, an extraction, a chat that repeats what it
was shown — repeats n-grams already in the context. The drafter finds the most recent earlier
occurrence of the sequence's last ``NGRAM_MAX`` … ``NGRAM_MIN`` tokens and proposes the tokens that
followed it. The batcher decodes the sampled token and the draft in one step and samples every
row in order with the sequence's own sampler chain, keeping the draft only while each sampled token
equals the drafted one: the output is exactly what decoding one token per step gives (the same
chain, the same order of accepted tokens), whatever the sampling settings; a good draft turns one
step into several tokens, a bad one costs a few extra batch rows.

The draft length adapts per sequence: after a step it is twice the tokens the last draft got
accepted, plus one, up to the engine's ``draft_max``, so free text (rare matches, short accepted
runs) drafts little and quoted text drafts long.
"""

from __future__ import annotations

from typing import Literal

Speculative = Literal["off", "ngram"]

NGRAM_MAX = 4  # the longest suffix looked up first: a longer match predicts better
NGRAM_MIN = 2  # single tokens match almost anywhere and predict badly


class NgramDrafter:
    """The n-gram index of one sequence's context (what its slot's cells hold plus what it generated).

    ``index[n][gram]`` is the position just after the most recent occurrence of ``gram`` (n tokens)
    that has at least one token after it, so a lookup of the context's own last n tokens finds an
    earlier occurrence, never itself.
    """

    def __init__(self, tokens: list[int], draft_max: int) -> None:
        self.draft_max = draft_max
        self.next_length = draft_max
        self._tokens: list[int] = []
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(NGRAM_MIN, NGRAM_MAX + 1)}
        self.extend(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def extend(self, tokens: list[int]) -> None:
        history = self._tokens
        for token in tokens:
            end = len(history)  # the new token's position: every gram ending just before it gains it
            for n, grams in self._index.items():
                if end >= n:
                    grams[tuple(history[end - n : end])] = end
            history.append(token)

    def draft(self, limit: int) -> list[int]:
        """Up to ``min(limit, next_length)`` tokens likely to follow the context, or none."""
        want = min(limit, self.next_length)
        history = self._tokens
        if want <= 0:
            return []
        for n in range(NGRAM_MAX, NGRAM_MIN - 1, -1):
            if len(history) <= n:
                continue
            start = self._index[n].get(tuple(history[-n:]))
            if start is not None:
                return history[start : start + want]
        return []

    def accepted(self, drafted: int, kept: int) -> None:
        """After a verifying step: ``kept`` of ``drafted`` draft tokens matched what was sampled."""
        if drafted:
            self.next_length = max(1, min(self.draft_max, 2 * kept + 1))

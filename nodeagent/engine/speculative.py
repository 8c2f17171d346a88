"""Speculative decoding: how drafts are verified and how much of them, and the n-gram drafter that
guesses a sequence's next tokens from its own context (a draft model's drafter: ``draft_model.py``).

Output that quotes its input — a code edit, a summary, an extraction, a chat that repeats what it
was shown — repeats n-grams already in the context. The drafter finds the most recent earlier
occurrence of the sequence's last ``NGRAM_MAX`` … ``NGRAM_MIN`` tokens and proposes the tokens that
followed it. The batcher decodes the sampled token and the draft in one step and samples every
row in order with the sequence's own sampler chain, keeping the draft only while each sampled token
equals the drafted one: the output is what decoding one token per step gives (the same chain, the
same order of accepted tokens), whatever the sampling settings — up to the last bits of a batched
row's logits, which llama.cpp's CPU kernels compute in a different order for a different number of
rows, exactly as when continuous batching puts other requests in the same step. A good draft turns
one step into several tokens, a bad one costs a few extra batch rows.

How much of a draft to verify is a cost decision. On a CPU a decode step costs nearly in
proportion to its rows (SmolLM2 on 2 cores: 13 ms for one row, 62 ms for nine), on a GPU nearly
nothing more per row; so the batcher measures the step's cost per row at start (``StepCost``) and
keeps, for each sequence, the draft prefix that raises the step's expected tokens per second, given
that sequence's measured acceptance. Free text (rare, short matches) then verifies little or
nothing and costs nothing; quoted text verifies as far as it pays. A draft model's own steps count
too (measured the same way): on a CPU, where a draft step costs a sizeable part of a target step, a
draft model rarely pays; on a GPU, where verifying rows is nearly free, it does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from llamafleet.contract.replica import Speculative

__all__ = ["Speculative"]  # the contract's: a Model's speculative field, the engine's --speculative

NGRAM_MAX = 4  # the longest suffix looked up first: a longer match predicts better
NGRAM_MIN = 2  # single tokens match almost anywhere and predict badly


class DraftStats:
    """One sequence's verifications: how likely its next draft token is accepted, from its own drafts
    and the engine's (the prior). A draft model's sequences have only this; n-gram ones also an index."""

    prediction_kept = 0  # draft tokens taken from a request's prediction that were kept (n-gram only)
    prediction_rejected = 0  # and that were not

    def __init__(self, engine: Acceptance | None = None, explore: bool = True) -> None:
        self._engine = engine or Acceptance()  # every sequence's verifications: the prior of a new one
        self._explore = explore  # n-gram: each answer may or may not quote; a draft model: the engine's prior
        self._kept = 0  # draft tokens verified equal so far
        self._missed = 0  # verifications that ended on a mismatch
        self._verified = 0  # verifying steps so far

    @property
    def exploring(self) -> bool:
        """Whether this sequence should verify a one-token draft even where the estimate says it does
        not pay: its first ``EXPLORE`` verifications, so that a quoting answer learns that it quotes
        even after free-text answers have lowered the engine's estimate. Not for a draft model: how
        well it guesses is a property of the pair of models more than of one answer, and a first draft
        costs its whole prompt in the draft model."""
        return self._explore and self._verified < EXPLORE

    @property
    def acceptance(self) -> float:
        """The chance that the next draft token is accepted given the previous one was (a geometric
        model): this sequence's verifications, starting from the engine's as worth ``PRIOR_WEIGHT``."""
        prior = self._engine.rate
        return (self._kept + PRIOR_WEIGHT * prior) / (self._kept + self._missed + PRIOR_WEIGHT)

    def accepted(self, drafted: int, kept: int) -> None:
        """After a verifying step: ``kept`` of ``drafted`` draft tokens matched what was sampled."""
        if drafted:
            self._verified += 1
            self._kept += kept
            self._missed += kept < drafted
            self._engine.add(kept, kept < drafted)


class NgramDrafter(DraftStats):
    """The n-gram index of one sequence's context (what its slot's cells hold plus what it generated).

    ``index[n][gram]`` is the position just after the most recent occurrence of ``gram`` (n tokens)
    that has at least one token after it, so a lookup of the context's own last n tokens finds an
    earlier occurrence, never itself.
    """

    def __init__(
        self,
        tokens: list[int],
        draft_max: int,
        engine: Acceptance | None = None,
        predicted: list[int] | None = None,
    ) -> None:
        super().__init__(engine)
        self.draft_max = draft_max
        self._tokens: list[int] = []
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(NGRAM_MIN, NGRAM_MAX + 1)}
        self._start = -1  # where the last proposal was taken from
        self._follow = -1  # where the copy goes on if the tokens since agree with the source
        # A request's predicted output (OpenAI's prediction) comes first in the history, as a source
        # only: the context starts after it.
        self.extend(predicted or [])
        self._offset = len(self._tokens)
        self.prediction_kept = 0
        self.prediction_rejected = 0
        self.extend(tokens)

    def __len__(self) -> int:
        """The context's tokens (the prediction, a source only, not counted)."""
        return len(self._tokens) - self._offset

    def extend(self, tokens: list[int]) -> None:
        history = self._tokens
        for token in tokens:
            end = len(history)  # the new token's position: every gram ending just before it gains it
            for n, grams in self._index.items():
                if end >= n:
                    grams[tuple(history[end - n : end])] = end
            history.append(token)

    def draft(self, limit: int) -> list[int]:
        """Up to ``min(limit, draft_max)`` tokens that followed the context's suffix before, or none."""
        want = min(limit, self.draft_max)
        history = self._tokens
        if want <= 0:
            return []
        self._start = -1
        follow = self._follow
        if (
            NGRAM_MIN <= follow < len(history)
            and history[follow - NGRAM_MIN : follow] == history[-NGRAM_MIN:]
        ):
            self._start = follow  # a copy in progress goes on from where it is, even where the last
        else:  # n-grams occur again and again (the lines of a list)
            for n in range(NGRAM_MAX, NGRAM_MIN - 1, -1):
                if len(history) > n:
                    self._start = self._index[n].get(tuple(history[-n:]), -1)
                    if self._start >= 0:
                        break
        return history[self._start : self._start + want] if self._start >= 0 else []

    def accepted(self, drafted: int, kept: int) -> None:
        super().accepted(drafted, kept)
        if drafted:
            if 0 <= self._start < self._offset:
                self.prediction_kept += kept
                self.prediction_rejected += drafted - kept
            self._follow = self._start + kept + 1  # valid only if the sampled token was the source's too


PRIOR_WEIGHT = 2.0  # a new sequence's prior counts as two verified tokens: its own soon outweigh it
EXPLORE = 4  # one-token drafts each sequence verifies at least (where the drafter finds a match)


class Acceptance:
    """Every sequence's verifications in one engine (the batcher thread's), recent ones counting most.

    It starts optimistic — three of four draft tokens accepted — so an engine drafts and learns. A
    model or workload whose drafts fail stops drafting for new sequences too; every step without a
    verification moves the estimate back toward the optimistic start, so drafting is tried again
    after a while (a workload can change)."""

    START = (3.0, 1.0)  # (kept, missed)
    DECAY = 0.995  # per verification, and per step without one

    def __init__(self) -> None:
        self._kept, self._missed = self.START

    @property
    def rate(self) -> float:
        return self._kept / (self._kept + self._missed)

    def add(self, kept: int, missed: bool) -> None:
        self._kept = self._kept * self.DECAY + kept
        self._missed = self._missed * self.DECAY + missed

    def idle(self) -> None:
        """A step verified nothing: drift toward the start."""
        start_kept, start_missed = self.START
        self._kept = self._kept * self.DECAY + start_kept * (1 - self.DECAY)
        self._missed = self._missed * self.DECAY + start_missed * (1 - self.DECAY)


@dataclass(frozen=True)
class StepCost:
    """A decode step's time by its rows: measured points, linear between them and past the last.

    Not one line: on a CPU the second row costs more than later ones (SmolLM2 on 2 cores: 13, 23,
    30, 34 … 62 ms for 1, 2, 3, 4 … 9 rows), and a line through 1 and 9 rows would make a one-token
    draft look cheaper than it is."""

    points: tuple[tuple[int, float], ...]  # (rows, seconds), rows increasing, at least two

    def of(self, rows: float) -> float:
        points = self.points
        for (r0, s0), (r1, s1) in itertools.pairwise(points):
            if rows <= r1 or (r1, s1) == points[-1]:
                return s0 + (s1 - s0) * (rows - r0) / (r1 - r0)
        return points[-1][1]  # unreachable: the loop returns on its last pair


def expected_extra(acceptance: float, k: int) -> float:
    """Tokens beyond the sampled one that a k-token draft is expected to yield: p + p² + … + p^k."""
    return sum(acceptance**i for i in range(1, k + 1))


def worth_verifying(
    draft: list[int],
    acceptance: float,
    cost: StepCost,
    tokens: float,
    rows: float,
    spent: float = 0.0,
    per_token: float = 0.0,
    fixed: float = 0.0,
) -> int:
    """How many of ``draft``'s tokens to add to a step that so far yields ``tokens`` expected tokens
    from ``rows`` rows: the prefix with the most expected tokens per second of step (0: none). A draft
    model's time counts too: ``spent`` seconds drafting so far this step, ``per_token`` per more, and
    ``fixed`` for any draft at all (catching the draft model up with the sequence)."""
    best_k, best = 0, tokens / (cost.of(rows) + spent)
    for k in range(1, len(draft) + 1):
        rate = (tokens + expected_extra(acceptance, k)) / (cost.of(rows + k) + spent + fixed + per_token * k)
        if rate > best:
            best_k, best = k, rate
    return best_k


def calibrate(decode_rows: Callable[[int], float], draft_max: int) -> StepCost:
    """Measure a step's cost with ``decode_rows(n)`` (seconds for a step of n rows) at 1, 2, 3, 5 …
    1 + draft_max rows, the least of two tries each after a warm-up (the least: noise only adds)."""
    decode_rows(1)
    sizes = sorted({1, 2, 3, *range(5, draft_max + 2, 4), draft_max + 1})
    return StepCost(tuple((n, min(decode_rows(n), decode_rows(n))) for n in sizes))

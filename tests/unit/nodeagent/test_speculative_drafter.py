"""The n-gram drafter of speculative decoding: what it proposes, and how its draft length adapts."""

from __future__ import annotations

from nodeagent.engine.speculative import NGRAM_MAX, NgramDrafter


def test_the_tokens_after_the_latest_earlier_occurrence_of_the_suffix_are_proposed() -> None:
    drafter = NgramDrafter([1, 2, 3, 4, 5, 9, 9, 1, 2, 3, 7, 8, 1, 2, 3], draft_max=8)
    assert drafter.draft(8) == [7, 8, 1, 2, 3]  # [1, 2, 3] last seen before 7, 8, not before 4, 5
    assert drafter.draft(2) == [7, 8]


def test_the_longest_matching_suffix_wins() -> None:
    # [5, 1, 2] occurred before 6; only [1, 2] occurred later (before 7).
    drafter = NgramDrafter([5, 1, 2, 6, 0, 1, 2, 7, 0, 5, 1, 2], draft_max=8)
    assert drafter.draft(1) == [6]


def test_nothing_is_proposed_without_an_earlier_occurrence() -> None:
    assert NgramDrafter([1, 2, 3, 4, 5, 6], draft_max=8).draft(8) == []
    assert NgramDrafter([1, 2, 3, 4, 5, 6, 3], draft_max=8).draft(8) == []  # one token is too little
    assert NgramDrafter([1, 2, 1, 2], draft_max=8).draft(0) == []


def test_the_index_follows_the_context_as_it_grows() -> None:
    drafter = NgramDrafter([4, 5, 6, 7], draft_max=8)
    assert drafter.draft(8) == []
    drafter.extend([1, 4, 5])
    assert len(drafter) == 7
    assert drafter.draft(8) == [6, 7, 1, 4, 5]


def test_the_draft_length_follows_what_was_accepted() -> None:
    drafter = NgramDrafter(list(range(NGRAM_MAX)) * 3, draft_max=8)
    assert drafter.next_length == 8
    drafter.accepted(8, 0)
    assert drafter.next_length == 1
    assert len(drafter.draft(8)) == 1
    drafter.accepted(1, 1)
    assert drafter.next_length == 3
    drafter.accepted(3, 3)
    assert drafter.next_length == 7
    drafter.accepted(7, 7)
    assert drafter.next_length == 8  # never past draft_max
    drafter.accepted(0, 0)  # no draft this step: unchanged
    assert drafter.next_length == 8
